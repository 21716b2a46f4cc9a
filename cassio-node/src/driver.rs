//! The tokio driver: one task per node that pumps `cassio_core::Node`.
//!
//! Inputs, each turned into one `handle_*` call followed by draining
//! `poll_output` to `None`:
//! - frames from the transport (one receive task per transport feeds a
//!   channel) → [`crate::peer_auth::deliver`] (the sender is checked
//!   against the peer's certificate) → `handle_message`;
//! - client commands from [`NodeHandle`]s → `handle_client` (or a status
//!   snapshot);
//! - completed storage operations → `handle_storage`;
//! - the timer armed at `poll_timeout` → `handle_timeout`.
//!
//! Outputs: `Send` is encoded and queued to a per-peer outbound task (so a
//! peer that is slow to connect never holds up the loop or other peers),
//! `Reply` completes the caller's oneshot, `Storage` is collected and handed
//! to the [`StorageMode`] once per loop turn, `Event` is logged.
//!
//! # Where storage runs, and why
//!
//! `Store` is synchronous and may block on `fsync` (sync policy `Always`) or
//! on a read that misses memory, so a disk-backed store must not run on the
//! event loop. `benches/storage_dispatch.rs` measured the candidates on this
//! 2-core machine: one node with the native store, 64 concurrent clients
//! each doing a put then a get (128 requests per round; criterion medians
//! per round, machine shared with a C++ build, see docs/operations.md).
//!
//! | sync policy | inline | `spawn_blocking` per op | batched, 1 thread | 2 threads | 4 threads |
//! | --- | --- | --- | --- | --- | --- |
//! | periodic 100 ms | 0.68 ms | 4.21 ms | 1.47 ms | 1.42 ms | 2.20 ms |
//! | always | 72.8 ms | 20.9 ms | | | 36.3 ms |
//!
//! With a periodic (or no) sync, batched workers cost one thread hop per
//! batch instead of one per operation: 3x less than `spawn_blocking` per
//! op, about 6 µs per request more than inline, and they never stall the
//! loop (inline only wins while nothing blocks; one fsync or cold read
//! would stall every peer and client of the node). Two threads keep one
//! slow read from holding up every other operation; more only add
//! switching on two cores. Hence the default [`StorageMode::Workers`] with
//! two threads. With `Always`, every apply fsyncs and the native log shares
//! one fsync among *concurrent* callers, so running each op on its own
//! blocking thread is fastest (3.5x inline, 1.7x batched workers, which
//! fsync one op at a time per batch); the binary picks
//! [`StorageMode::BlockingPerOp`] for that policy. `Inline` stays available
//! for stores that never block (the in-memory reference store).
//!
//! In `Workers` mode the loop first offers each operation to the store's
//! non-waiting entry points ([`Store::get_if_cached`],
//! [`Store::apply_replacing_if_cached`]): a read or write whose data is in
//! memory (the native store: a memtable hit, or a key every table's filter
//! rules out; no fsync, no stall) is done on the loop, and only the rest
//! goes to a worker. That keeps inline's speed where nothing can block and
//! the workers' safety where something might (issue 15; the figures are in
//! docs/benchmarks.md, "The hot path").
//!
//! # Overload
//!
//! Storage work is bounded by [`StorageLimits`] (see
//! [`crate::storage_exec`]): when as many operations wait as may run, the
//! driver stops reading peer frames (the transport's bounded queues push
//! back on peers) and answers client requests
//! [`cassio_core::ClientError::Overloaded`] at once (counted in
//! `cassio_overloaded_total{source="client"}`), until completions drain the
//! queue. Timers and storage completions are always served, so a node under
//! load still gossips on time and recovers as soon as its store does. Peer
//! frames waiting for the loop hold at most [`FRAME_BUDGET_BYTES`].

use crate::handle::{
    ClusterStatus, Command, DecommissionStarted, HintInfo, JoinProgress, KeyspaceStatus,
    MemberStatus, PendingHints, RemoveStarted, RepairInfo, RepairRequest, RepairStarted,
    RequestError, RingChange, RingOpError, RoundOutcome, RoundProgress,
};
use crate::request_stats::RequestStats;
use crate::storage_exec::{self, DoneBatch, StorageQueue, Workers};
use bytes::Bytes;
use cassio_core::{
    ClientOp, ClientRequest, ClientResponse, HintLog, InboundFrame, MembershipEvent, Node,
    NodeEvent, NodeId, Output, RequestId, SendManyError, Store, Transport, TransportError,
};
use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

pub use crate::storage_exec::{
    StorageLimits, DEFAULT_STORAGE_MAX_IN_FLIGHT, DEFAULT_STORAGE_MAX_IN_FLIGHT_BYTES,
};

/// How long a node stopped with `--leave-on-exit` waits for the nodes
/// gaining its ranges to sync them before it stops anyway (still on the
/// ring, so nothing is lost).
const LEAVE_HANDOVER_LIMIT: Duration = Duration::from_secs(600);

/// The largest key the node accepts from a client (the native store's limit).
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// The largest value the node accepts from a client: a replica write must
/// fit in one peer frame (16 MiB) with its envelope.
pub const MAX_VALUE_LEN: usize = 15 * 1024 * 1024;

/// Frames queued for one peer before new ones are dropped (gossip and the
/// coordinator's timeouts cope with loss; memory must stay bounded).
const PEER_QUEUE: usize = 4096;

/// Most queued frames handed to the transport in one `send_many`.
const SEND_BATCH: usize = 64;
/// Bytes queued for one peer before new frames are dropped: a peer that
/// pushes back (its store is stalled) must not make this node hold
/// thousands of 15 MiB writes for it. One frame larger than this is still
/// queued when the queue is empty.
pub const PEER_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Inputs of one kind taken per loop turn, so a flood of one kind cannot
/// starve the others while still building storage batches.
const MAX_PER_TURN: usize = 256;
/// How often the store's size is read for gossip and metrics.
const LOAD_INTERVAL: Duration = Duration::from_secs(2);
/// A joining node logs its progress every this many load ticks (10 s).
const JOIN_LOG_EVERY_TICKS: u32 = 5;
/// Bytes of received peer frames waiting for the event loop; past it the
/// receive task stops taking frames from the transport (a frame is at most
/// 16 MiB, so several always fit).
pub const FRAME_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Received frames waiting for the event loop, whatever their size.
const FRAME_QUEUE: usize = 1024;
/// Ended anti-entropy rounds kept for `/status` (so `cassio repair` finds
/// its round even if another ended right after it).
const RECENT_ROUNDS: usize = 8;

/// Where the driver runs storage operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageMode {
    /// On the event loop itself; only for stores that never block.
    Inline,
    /// One `tokio::task::spawn_blocking` per operation.
    BlockingPerOp,
    /// Dedicated threads; each loop turn's operations go to one of them as
    /// a batch, and come back as one batch.
    Workers {
        /// How many threads.
        threads: usize,
    },
}

impl Default for StorageMode {
    fn default() -> Self {
        StorageMode::Workers { threads: 2 }
    }
}

/// Why a driver stopped uncleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// Flushing or syncing the store failed; recent writes may be lost.
    #[error("storage flush failed: {0}")]
    Storage(String),
    /// The driver task ended before it could report (it panicked or was aborted).
    #[error("driver task ended unexpectedly")]
    DriverGone,
}

/// Instructions from the running-node object to its driver.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop: optionally leave the ring first; report when done.
    Shutdown {
        leave: bool,
        done: oneshot::Sender<Result<(), ShutdownError>>,
    },
}

/// Maps tokio's monotonic clock onto the core's microseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Both clocks, read now: the core takes the wall clock with every input.
    pub(crate) fn now(&self) -> cassio_core::Now {
        cassio_core::Now::new(self.instant(), wall_micros())
    }

    /// The monotonic clock alone.
    pub(crate) fn instant(&self) -> cassio_core::Instant {
        let micros = self.origin.elapsed().as_micros();
        cassio_core::Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn to_tokio(self, at: cassio_core::Instant) -> tokio::time::Instant {
        self.origin + Duration::from_micros(at.as_micros())
    }
}

/// Wall-clock microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

struct PendingRequest {
    reply: oneshot::Sender<Result<ClientResponse, RequestError>>,
    op: &'static str,
    started: std::time::Instant,
}

/// Everything the driver task owns.
pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) clock: Clock,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn Store>,
    /// Where hint operations run.
    pub(crate) hints: Arc<dyn HintLog>,
    /// Where the core's persisted state goes, if anywhere.
    pub(crate) state_file: Option<crate::node_state::NodeStateFile>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) mode: StorageMode,
    pub(crate) limits: StorageLimits,
    /// How long a storage operation stays worth running (the request timeout).
    pub(crate) op_timeout: Duration,
    /// Whether the core keeps hints (reported in the status).
    pub(crate) hints_enabled: bool,
    /// Turned `true` once a decommission asked over the admin API has
    /// completed (the node announced `Left` and it spread): the host then
    /// stops the node.
    pub(crate) left: watch::Sender<bool>,
}

struct Running {
    node: Node,
    clock: Clock,
    state_file: Option<crate::node_state::NodeStateFile>,
    transport: Arc<dyn Transport>,
    store: Arc<dyn Store>,
    hints: Arc<dyn HintLog>,
    mode: StorageMode,
    workers: Option<Workers>,
    done_tx: mpsc::UnboundedSender<DoneBatch>,
    next_request: u64,
    requests: HashMap<RequestId, PendingRequest>,
    storage: StorageQueue,
    peers: HashMap<SocketAddr, PeerQueue>,
    cluster: String,
    /// Shutting down (leaving first): new requests are refused at once.
    stopping: bool,
    /// Anti-entropy rounds that ended since this node started.
    rounds_ended: u64,
    /// Whether the core keeps hints (its configuration; for `/status`).
    hints_enabled: bool,
    /// The last few of them.
    recent_rounds: VecDeque<RoundOutcome>,
    /// Recent request rates and latencies, for `/status`.
    request_stats: RequestStats,
    /// A decommission asked over the admin API is under way: the node
    /// keeps serving while Leaving, and signals its host once it has left.
    decommissioning: bool,
}

fn op_name(op: &ClientOp) -> &'static str {
    match op {
        // Cell ops count with the key ops they resemble.
        ClientOp::Get { .. }
        | ClientOp::GetEntry { .. }
        | ClientOp::GetCell { .. }
        | ClientOp::ReadRow { .. } => "get",
        ClientOp::Put { .. }
        | ClientOp::PutExpiring { .. }
        | ClientOp::PutCell { .. }
        | ClientOp::Cas { .. }
        | ClientOp::Incr { .. } => "set",
        ClientOp::Delete { .. } | ClientOp::DeleteCell { .. } => "del",
        ClientOp::Scan { .. } => "scan",
    }
}

fn error_label(e: &RequestError) -> &'static str {
    match e {
        RequestError::Client(c) => match c {
            cassio_core::ClientError::Unavailable { .. } => "unavailable",
            cassio_core::ClientError::Timeout { .. } => "timeout",
            cassio_core::ClientError::ReplicaFailure { .. } => "replica_failure",
            cassio_core::ClientError::UnknownKeyspace(_) => "unknown_keyspace",
            cassio_core::ClientError::InvalidConsistency { .. } => "invalid_consistency",
            cassio_core::ClientError::ShuttingDown => "shutting_down",
            cassio_core::ClientError::Joining => "joining",
            cassio_core::ClientError::Overloaded => "overloaded",
            cassio_core::ClientError::ClockOffset { .. } => "clock_offset",
            cassio_core::ClientError::ConfigMismatch { .. } => "config_mismatch",
            cassio_core::ClientError::Contended { .. } => "contended",
            _ => "error",
        },
        RequestError::NotRunning => "not_running",
        RequestError::BadRequest(_) => "bad_request",
        RequestError::Unauthorized(_) => "unauthorized",
    }
}

/// Refuses requests the cluster could not carry (the limits every client
/// path shares, so each gateway need not repeat them).
fn check_request(req: &ClientRequest) -> Result<(), RequestError> {
    // A cell's row and column together are its key.
    let (key_len, value) = match &req.op {
        ClientOp::Get { key } | ClientOp::Delete { key } | ClientOp::GetEntry { key } => {
            (key.len(), None)
        }
        ClientOp::Put { key, value } | ClientOp::PutExpiring { key, value, .. } => {
            (key.len(), Some(value))
        }
        ClientOp::Scan { prefix, .. } => (prefix.len(), None),
        ClientOp::GetCell { row, column } | ClientOp::DeleteCell { row, column } => {
            (row.len() + column.len(), None)
        }
        ClientOp::PutCell { row, column, value } => (row.len() + column.len(), Some(value)),
        ClientOp::ReadRow { row, .. } => (row.len(), None),
        ClientOp::Cas {
            key, expected, new, ..
        } => {
            if let Some(e) = expected.as_ref().filter(|e| e.len() > MAX_VALUE_LEN) {
                return Err(RequestError::BadRequest(format!(
                    "expected value of {} bytes exceeds the limit of {MAX_VALUE_LEN} bytes",
                    e.len()
                )));
            }
            (key.len(), Some(new))
        }
        ClientOp::Incr { key, .. } => (key.len(), None),
    };
    if key_len > MAX_KEY_LEN {
        return Err(RequestError::BadRequest(format!(
            "key of {key_len} bytes exceeds the limit of {MAX_KEY_LEN} bytes"
        )));
    }
    if let Some(v) = value {
        if v.len() > MAX_VALUE_LEN {
            return Err(RequestError::BadRequest(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN} bytes",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Frames received together and their share of [`FRAME_BUDGET_BYTES`],
/// released once the core has handled them.
type Frames = (Vec<InboundFrame>, OwnedSemaphorePermit);

/// Most frames taken from the transport (and handed to the loop) at once.
const RECV_BATCH: usize = 64;

/// Receives frames from the transport and forwards them, within the byte
/// budget: when the loop is slow (or paused by back-pressure) this task
/// stops taking frames, and the transport's bounded queues push back.
/// Frames that arrived together travel together: one hand-off to the loop
/// per batch, not per frame.
async fn recv_loop(transport: Arc<dyn Transport>, tx: mpsc::Sender<Frames>) {
    let budget = Arc::new(Semaphore::new(FRAME_BUDGET_BYTES));
    loop {
        let mut batch = Vec::with_capacity(RECV_BATCH);
        match transport.recv_many(&mut batch, RECV_BATCH).await {
            Ok(_) => {
                let n: usize = batch.iter().map(|f| f.payload.len().max(1)).sum();
                let n = n.clamp(1, FRAME_BUDGET_BYTES);
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                let Ok(permit) = budget.clone().acquire_many_owned(n).await else {
                    return;
                };
                if tx.send((batch, permit)).await.is_err() {
                    return;
                }
            }
            Err(TransportError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "transport receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The outbound queue of one peer and the bytes in it.
struct PeerQueue {
    tx: mpsc::Sender<Bytes>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// Sends queued frames to one peer, in order, without blocking the driver.
async fn peer_loop(
    transport: Arc<dyn Transport>,
    to: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(first) = rx.recv().await {
        // Everything already queued goes to the transport in one call.
        let mut batch = vec![first];
        while batch.len() < SEND_BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        queued.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
        while !batch.is_empty() {
            match transport.send_many(to, std::mem::take(&mut batch)).await {
                Ok(()) => {}
                Err(SendManyError {
                    error, mut unsent, ..
                }) => {
                    metrics::counter!("cassio_peer_frames_dropped_total", "reason" => "send_error")
                        .increment(1);
                    tracing::debug!(peer = %to, %error, "frame to peer dropped");
                    // Only the failing frame is dropped; the ones after it
                    // are tried again, as single sends would be.
                    if !unsent.is_empty() {
                        unsent.remove(0);
                    }
                    batch = unsent;
                }
            }
        }
    }
}

impl Running {
    /// Hands received frames to the core, carrying out what each asks for
    /// before the next (as frames one by one would).
    fn deliver_frames(&mut self, frames: &[InboundFrame]) {
        for frame in frames {
            crate::peer_auth::deliver(&mut self.node, self.clock.now(), frame);
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { addr, msg, .. } => match self.node.encode(&msg) {
                    Ok(frame) => self.send_frame(addr, Bytes::from(frame)),
                    Err(e) => {
                        tracing::warn!(peer = %addr, error = %e, "could not encode a peer message")
                    }
                },
                Output::Reply { id, result } => self.reply(id, result.map_err(RequestError::from)),
                Output::Storage { token, op } => self.storage.push(token, op),
                Output::Event(e) => {
                    match &e {
                        NodeEvent::Membership(MembershipEvent::Removed { addr, .. }) => {
                            // A member that left or died for good: drop its
                            // send task and queue here and its connection in
                            // the transport, so neither grows with departed
                            // peers.
                            self.peers.remove(addr);
                            self.transport.forget(*addr);
                        }
                        NodeEvent::RepairRound {
                            pairs,
                            failed,
                            skipped_down,
                        } => {
                            self.rounds_ended += 1;
                            if self.recent_rounds.len() == RECENT_ROUNDS {
                                self.recent_rounds.pop_front();
                            }
                            self.recent_rounds.push_back(RoundOutcome {
                                number: self.rounds_ended,
                                pairs: *pairs,
                                failed: *failed,
                                skipped_down: *skipped_down,
                                ended_at: wall_micros(),
                            });
                        }
                        _ => {}
                    }
                    log_event(&e)
                }
                Output::Persist(state) => self.persist(&state),
            }
        }
    }

    /// Saves the core's state before anything else happens: the core has
    /// not issued a timestamp above the previous high-water mark yet, and
    /// will not until this returns. Rare (about once a second at most), so
    /// it runs inline.
    fn persist(&mut self, state: &cassio_core::PersistedState) {
        let Some(f) = &self.state_file else { return };
        if let Err(e) = f.save(state) {
            metrics::counter!("cassio_node_state_persist_errors_total").increment(1);
            tracing::error!(path = %f.path().display(), error = %e,
                "could not persist the node state; a restart may start with a stale view or clock");
        }
    }

    fn send_frame(&mut self, addr: SocketAddr, frame: Bytes) {
        use std::sync::atomic::Ordering;
        let q = self.peers.entry(addr).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            tokio::spawn(peer_loop(self.transport.clone(), addr, rx, bytes.clone()));
            PeerQueue { tx, bytes }
        });
        let len = frame.len();
        let held = q.bytes.load(Ordering::Relaxed);
        let fits = held == 0 || held + len <= PEER_QUEUE_BYTES;
        // Counted before sending, so the peer task's subtraction never
        // comes first.
        if fits {
            q.bytes.fetch_add(len, Ordering::Relaxed);
        }
        if !fits || q.tx.try_send(frame).is_err() {
            if fits {
                q.bytes.fetch_sub(len, Ordering::Relaxed);
            }
            metrics::counter!("cassio_peer_frames_dropped_total", "reason" => "queue_full")
                .increment(1);
            tracing::debug!(peer = %addr, "peer queue full: frame dropped");
        }
    }

    fn reply(&mut self, id: RequestId, result: Result<ClientResponse, RequestError>) {
        let Some(p) = self.requests.remove(&id) else {
            return;
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => error_label(e),
        };
        let now = std::time::Instant::now();
        let latency = now.saturating_duration_since(p.started);
        // Every answered request records these two: registered handles
        // spare the per-request lookup by name and labels.
        let handles = crate::gateway::metrics_install::Handles::get()
            .filter(|_| label == "ok")
            .and_then(|h| h.driver(p.op));
        match handles {
            Some((count, duration)) => {
                count.increment(1);
                duration.record(latency.as_secs_f64());
            }
            None => {
                metrics::counter!("cassio_requests_total", "op" => p.op, "result" => label)
                    .increment(1);
                metrics::histogram!("cassio_request_duration_seconds", "op" => p.op)
                    .record(latency.as_secs_f64());
            }
        }
        self.request_stats.record(p.op, now, latency, label == "ok");
        // The caller may have given up (timeout, dropped connection).
        let _ = p.reply.send(result);
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Request(req, reply) if self.stopping => {
                metrics::counter!("cassio_requests_total", "op" => op_name(&req.op), "result" => "shutting_down")
                    .increment(1);
                self.request_stats
                    .refused(op_name(&req.op), std::time::Instant::now());
                let _ = reply.send(Err(RequestError::Client(
                    cassio_core::ClientError::ShuttingDown,
                )));
            }
            Command::Request(req, reply) if self.storage.saturated() => {
                metrics::counter!("cassio_requests_total", "op" => op_name(&req.op), "result" => "overloaded")
                    .increment(1);
                metrics::counter!("cassio_overloaded_total", "source" => "client").increment(1);
                self.request_stats
                    .refused(op_name(&req.op), std::time::Instant::now());
                let _ = reply.send(Err(RequestError::Client(
                    cassio_core::ClientError::Overloaded,
                )));
            }
            Command::Request(req, reply) => {
                let op = op_name(&req.op);
                if let Err(e) = check_request(&req) {
                    metrics::counter!("cassio_requests_total", "op" => op, "result" => "bad_request")
                        .increment(1);
                    self.request_stats.refused(op, std::time::Instant::now());
                    let _ = reply.send(Err(e));
                    return;
                }
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.requests.insert(
                    id,
                    PendingRequest {
                        reply,
                        op,
                        started: std::time::Instant::now(),
                    },
                );
                let now = self.clock.now();
                self.node.handle_client(now, id, req);
                self.drain();
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Layout(reply) => {
                let _ = reply.send(crate::cluster_layout::ClusterLayout::of(&self.node));
            }
            Command::Repair(req, reply) => {
                let _ = reply.send(self.repair(req));
            }
            Command::Decommission(reply) => {
                let _ = reply.send(self.decommission());
            }
            Command::RemoveDead(dead, reply) => {
                let _ = reply.send(self.remove_dead(dead));
            }
            Command::ChangeSchema(change, reply) => {
                if self.stopping {
                    let _ = reply.send(Err(RequestError::NotRunning));
                    return;
                }
                tracing::info!(?change, "schema change requested");
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.requests.insert(
                    id,
                    PendingRequest {
                        reply,
                        op: "schema",
                        started: std::time::Instant::now(),
                    },
                );
                let now = self.clock.now();
                self.node.change_schema(now, id, change);
                self.drain();
            }
        }
    }

    /// Starts leaving the cluster for an operator (`cassio decommission`).
    /// Unlike a shutdown with leave, requests are still served while the
    /// ranges move: the node stays a replica until it announces `Left`.
    fn decommission(&mut self) -> Result<DecommissionStarted, RingOpError> {
        if self.stopping {
            return Err(RingOpError::NotRunning);
        }
        let already_leaving = self.node.membership().status() == cassio_core::NodeStatus::Leaving;
        let now = self.clock.now();
        if let Err(e) = self.node.leave(now) {
            tracing::warn!(error = %e, "decommission refused; the node keeps running");
            return Err(e.into());
        }
        self.drain();
        self.decommissioning = true;
        tracing::info!(
            already_leaving,
            "decommission requested: Leaving until the nodes that gain this node's ranges have synced them, then the process stops"
        );
        Ok(DecommissionStarted {
            node_id: self.node.id().0,
            already_leaving,
        })
    }

    /// Asks the cluster to take dead member `dead` off the ring
    /// (`cassio remove --dead`).
    fn remove_dead(&mut self, dead: NodeId) -> Result<RemoveStarted, RingOpError> {
        if self.stopping {
            return Err(RingOpError::NotRunning);
        }
        let now = self.clock.now();
        if let Err(e) = self.node.remove_dead(now, dead) {
            tracing::warn!(node = %dead, error = %e, "removal of a dead node refused");
            return Err(e.into());
        }
        self.drain();
        tracing::info!(node = %dead, "removal of a dead node requested: its ranges are synced among the other nodes, then every node forgets it");
        Ok(RemoveStarted {
            node_id: dead.0,
            requested_by: self.node.id().0,
        })
    }

    /// Starts an operator's anti-entropy round (after the running one, if
    /// any), once the keyspace and peer it names are known.
    fn repair(&mut self, req: RepairRequest) -> Result<RepairStarted, RequestError> {
        if self.stopping {
            return Err(RequestError::Client(cassio_core::ClientError::ShuttingDown));
        }
        let me = self.node.id();
        // Anti-entropy knows keyspaces by the name their keys are stored
        // under.
        let storage_name = match &req.keyspace {
            None => None,
            Some(ks) => match self.node.schema().keyspace(ks) {
                Some(def) => Some(def.storage.clone()),
                None => {
                    let known: Vec<&str> = self
                        .node
                        .schema()
                        .keyspaces
                        .keys()
                        .map(String::as_str)
                        .collect();
                    return Err(RequestError::BadRequest(format!(
                        "unknown keyspace {ks:?} (the cluster has: {})",
                        known.join(", ")
                    )));
                }
            },
        };
        let m = self.node.membership();
        let peer = match req.node {
            None => None,
            Some(addr) => {
                let found = m
                    .members()
                    .into_iter()
                    .find(|&id| m.addr_of(id) == Some(addr));
                match found {
                    Some(id) if id == me => {
                        return Err(RequestError::BadRequest(format!(
                            "{addr} is this node; name one of its peers"
                        )))
                    }
                    Some(id) => Some(id),
                    None => {
                        let peers: Vec<String> = m
                            .members()
                            .into_iter()
                            .filter(|&id| id != me)
                            .filter_map(|id| m.addr_of(id))
                            .map(|a| a.to_string())
                            .collect();
                        return Err(RequestError::BadRequest(format!(
                            "no member listens at {addr} (peers: {})",
                            if peers.is_empty() {
                                "none".to_string()
                            } else {
                                peers.join(", ")
                            }
                        )));
                    }
                }
            }
        };
        // A running round finishes first; the requested one is the next to
        // end after it.
        let queued = self.node.repair_status().round_progress.is_some();
        let round = self.rounds_ended + 1 + u64::from(queued);
        tracing::info!(keyspace = ?req.keyspace, peer = ?req.node, queued, "repair requested");
        let now = self.clock.now();
        self.node.start_repair(
            now,
            cassio_core::anti_entropy::RepairScope {
                keyspace: storage_name,
                peer,
            },
        );
        self.drain();
        Ok(RepairStarted {
            keyspace: req.keyspace,
            node: req.node.map(|a| a.to_string()),
            node_id: peer.map(|p| p.0),
            queued,
            round,
            repair: self.repair_info(),
        })
    }

    fn repair_info(&self) -> RepairInfo {
        let s = self.node.repair_status();
        RepairInfo {
            rounds_completed: s.rounds_completed,
            scoped_rounds_completed: s.scoped_rounds_completed,
            rounds_ended: self.rounds_ended,
            recent_rounds: self.recent_rounds.iter().copied().collect(),
            repaired_through: s.repaired_through,
            last_round_started: s.last_round_started,
            last_round_completed: s.last_round_completed,
            exchanges_completed: s.exchanges_completed,
            exchanges_failed: s.exchanges_failed,
            segments_repaired: s.segments_repaired,
            keys_compared: s.keys_compared,
            items_pushed: s.items_pushed,
            items_pulled: s.items_pulled,
            bytes_sent: s.bytes_sent,
            tree_items: s.tree_items,
            tree_memory_bytes: s.tree_memory_bytes,
            trees_ready: s.trees_ready,
            round: s.round_progress.map(|(done, total)| RoundProgress {
                pairs_done: done,
                pairs_total: total,
            }),
        }
    }

    fn hint_info(&self) -> HintInfo {
        let h = self.node.hint_status();
        HintInfo {
            enabled: self.hints_enabled,
            stored: h.stored,
            delivered: h.delivered,
            dropped_cap: h.dropped_cap,
            dropped_window: h.dropped_window,
            dropped_expired: h.dropped_expired,
            failed: h.failed,
            pending: h
                .pending_bytes
                .iter()
                .filter(|(_, &bytes)| bytes > 0)
                .map(|(&node_id, &bytes)| PendingHints { node_id, bytes })
                .collect(),
        }
    }

    fn status(&self) -> ClusterStatus {
        let m = self.node.membership();
        let ownership = self.node.ownership();
        let members: Vec<MemberStatus> = m
            .members()
            .into_iter()
            .filter_map(|id| {
                let (generation, app) = m.state_of(id)?;
                Some(MemberStatus {
                    id: id.0,
                    addr: app.addr.to_string(),
                    state: format!("{:?}", self.node.agreed_status(id).unwrap_or(app.status)),
                    up: m.is_alive(id),
                    load: app.load,
                    ownership: ownership.get(&id).copied().unwrap_or(0.0),
                    generation,
                    repaired_through: app.repaired_through,
                    datacenter: app.datacenter.clone(),
                    rack: app.rack.clone(),
                })
            })
            .collect();
        let schema = self.node.schema();
        let keyspaces = schema
            .keyspaces
            .values()
            .map(|k| KeyspaceStatus {
                name: k.config.name.clone(),
                id: u64::from(k.id),
                replication_factor: k.config.replication_factor as u64,
                default_consistency: k.config.default_consistency.to_string(),
                strategy: k.config.strategy.name().to_string(),
                replication: k.config.replication().to_string(),
            })
            .collect();
        let schema_version = schema.version;
        let mut ring_change = RingChange::default();
        for member in &members {
            let MemberStatus { id, state, .. } = member;
            match state.as_str() {
                "Joining" => ring_change.joining.push(*id),
                "Leaving" => ring_change.leaving.push(*id),
                _ => {}
            }
        }
        ring_change.removing = m.removals().into_iter().map(|id| id.0).collect();
        for id in m.removing() {
            if !ring_change.removing.contains(&id.0) {
                ring_change.removing.push(id.0);
            }
        }
        ring_change.removing.sort_unstable();
        ClusterStatus {
            local_id: self.node.id().0,
            cluster: self.cluster.clone(),
            members,
            state: format!(
                "{:?}",
                self.node
                    .agreed_status(self.node.id())
                    .unwrap_or(m.status())
            ),
            ready: self.node.is_ready(),
            now_micros: wall_micros(),
            repair: self.repair_info(),
            hints: self.hint_info(),
            keyspaces,
            schema_version,
            requests: self.request_stats.snapshot(std::time::Instant::now()),
            ring_change,
            join_progress: self.join_progress(),
        }
    }

    /// This node's join so far, while it joins.
    fn join_progress(&self) -> Option<JoinProgress> {
        let elapsed = self.node.joining_for(self.clock.instant())?;
        Some(JoinProgress {
            elapsed_secs: elapsed.as_secs_f64(),
        })
    }

    fn record_membership_gauges(&self) {
        let m = self.node.membership();
        let mut counts: HashMap<(String, bool), u64> = HashMap::new();
        for id in m.members() {
            if let Some((_, app)) = m.state_of(id) {
                *counts
                    .entry((format!("{:?}", app.status).to_lowercase(), m.is_alive(id)))
                    .or_default() += 1;
            }
        }
        for state in ["joining", "normal", "leaving", "syncing", "left"] {
            for up in [true, false] {
                let n = counts.get(&(state.to_string(), up)).copied().unwrap_or(0);
                metrics::gauge!("cassio_gossip_members", "state" => state, "up" => if up { "true" } else { "false" })
                    .set(n as f64);
            }
        }
    }

    /// Hands the storage operations that may start to the chosen executor,
    /// and answers those that expired while waiting.
    fn dispatch_storage(&mut self) {
        loop {
            let d = self.storage.dispatch();
            if d.run.is_empty() && d.expired.is_empty() {
                break;
            }
            if !d.expired.is_empty() {
                let now = self.clock.now();
                for job in d.expired {
                    metrics::counter!("cassio_storage_dropped_total", "reason" => "deadline")
                        .increment(1);
                    let r = storage_exec::failed(
                        &job.op,
                        "storage operation dropped: its request's deadline passed while it was queued"
                            .into(),
                    );
                    self.node.handle_storage(now, job.token, r);
                    self.drain();
                }
            }
            if d.run.is_empty() {
                continue;
            }
            metrics::histogram!("cassio_storage_batch_ops").record(d.run.len() as f64);
            match self.mode {
                StorageMode::Inline => {
                    for job in d.run {
                        let done =
                            storage_exec::execute(self.store.as_ref(), self.hints.as_ref(), job);
                        self.storage.completed(done.token, done.bytes);
                        self.node
                            .handle_storage(self.clock.now(), done.token, done.result);
                        self.drain();
                    }
                    // Completions may have asked for more storage (repairs):
                    // loop until none may start.
                }
                StorageMode::BlockingPerOp => {
                    for job in d.run {
                        let store = self.store.clone();
                        let hints = self.hints.clone();
                        let done = self.done_tx.clone();
                        // `execute` catches a panicking store, so every op
                        // is answered; a task cancelled by runtime shutdown
                        // has no driver left to answer.
                        tokio::task::spawn_blocking(move || {
                            let _ = done.send(vec![storage_exec::execute(
                                store.as_ref(),
                                hints.as_ref(),
                                job,
                            )]);
                        });
                    }
                    break;
                }
                StorageMode::Workers { .. } => {
                    // What the store can do without waiting is done here;
                    // only the rest pays the hand-off to a worker and back.
                    let mut rest = Vec::with_capacity(d.run.len());
                    let mut now_done = Vec::new();
                    for job in d.run {
                        match storage_exec::run_if_cached(self.store.as_ref(), &job) {
                            Some(done) => now_done.push(done),
                            None => rest.push(job),
                        }
                    }
                    if !now_done.is_empty() {
                        let n = now_done.len() as u64;
                        // Every dispatch counts: a registered handle, not a
                        // lookup by name, as for the per-request metrics.
                        match crate::gateway::metrics_install::Handles::get() {
                            Some(h) => h.storage_inline().increment(n),
                            None => {
                                metrics::counter!("cassio_storage_inline_ops_total").increment(n)
                            }
                        }
                    }
                    let refused = if rest.is_empty() {
                        None
                    } else {
                        match &self.workers {
                            Some(w) => w.submit(rest).err(),
                            None => Some(rest),
                        }
                    };
                    if !now_done.is_empty() {
                        // Their answers may ask for more storage: loop.
                        self.storage_done(now_done);
                        if refused.is_none() {
                            continue;
                        }
                    }
                    let Some(batch) = refused else {
                        break;
                    };
                    // Only reachable if the workers died: answer with
                    // errors rather than leave requests hanging.
                    let now = self.clock.now();
                    for job in batch {
                        self.storage.completed(job.token, job.bytes);
                        let r = storage_exec::failed(&job.op, "storage workers stopped".into());
                        self.node.handle_storage(now, job.token, r);
                        self.drain();
                    }
                }
            }
        }
        self.storage.record_gauges();
    }

    fn storage_done(&mut self, batch: DoneBatch) {
        let now = self.clock.now();
        for done in batch {
            self.storage.completed(done.token, done.bytes);
            self.node.handle_storage(now, done.token, done.result);
            self.drain();
        }
    }
}

fn log_event(e: &NodeEvent) {
    match e {
        NodeEvent::Membership(m) => {
            metrics::counter!("cassio_membership_events_total", "event" => membership_event_name(m))
                .increment(1);
            match m {
                MembershipEvent::Joined(id) => tracing::info!(node = %id, "member joined"),
                MembershipEvent::Down(id) => tracing::warn!(node = %id, "member is down"),
                MembershipEvent::Up(id) => tracing::info!(node = %id, "member is up"),
                MembershipEvent::Restarted { id, generation } => {
                    tracing::info!(node = %id, generation, "member restarted")
                }
                MembershipEvent::StatusChanged { id, status } => {
                    tracing::info!(node = %id, status = ?status, "member status changed")
                }
                MembershipEvent::Removed { id, addr } => {
                    tracing::info!(node = %id, %addr, "member removed")
                }
            }
        }
        NodeEvent::UnknownPeer(id) => {
            tracing::debug!(node = %id, "message from a non-member dropped")
        }
        NodeEvent::BadFrame(err) => {
            metrics::counter!("cassio_bad_frames_total").increment(1);
            tracing::warn!(error = %err, "undecodable peer frame dropped")
        }
        NodeEvent::StorageFailed(err) => {
            metrics::counter!("cassio_storage_errors_total").increment(1);
            tracing::error!(error = %err, "storage operation failed")
        }
        NodeEvent::ClockAheadRefused { from, ahead_micros } => {
            metrics::counter!("cassio_clock_offset_refusals_total").increment(1);
            tracing::warn!(node = %from, ahead_ms = ahead_micros / 1000,
                "refused a timestamp beyond the maximum clock offset; check that peer's time source")
        }
        NodeEvent::ClockOffset { offset_micros } => {
            metrics::gauge!("cassio_clock_offset_micros").set(*offset_micros as f64);
            tracing::error!(offset_ms = offset_micros / 1000,
                "this node's clock is off the cluster's by more than the maximum offset; it refuses to stamp writes")
        }
        NodeEvent::ConfigMismatch { keyspace, detail } => {
            metrics::counter!("cassio_config_mismatch_total").increment(1);
            tracing::error!(keyspace = %keyspace, %detail,
                "keyspace settings differ from the cluster's; this node refuses to coordinate it")
        }
        NodeEvent::RepairRound {
            pairs,
            failed,
            skipped_down,
        } => {
            if *failed > 0 {
                tracing::warn!(
                    pairs,
                    failed,
                    skipped_down,
                    "anti-entropy round ended with failed exchanges; it is retried shortly"
                )
            } else if *skipped_down > 0 {
                tracing::info!(
                    pairs,
                    skipped_down,
                    "anti-entropy round completed without the peers that are down"
                )
            } else {
                tracing::info!(pairs, "anti-entropy round completed")
            }
        }
        NodeEvent::CaughtUp => {
            tracing::info!("caught up after the restart (hints received, a repair round completed): Normal, serving reads again")
        }
        NodeEvent::SchemaAdopted {
            version,
            digest,
            minted_by,
        } => {
            metrics::gauge!("cassio_schema_version").set(*version as f64);
            tracing::info!(version, digest = format_args!("{digest:016x}"), minted_by = %minted_by, "schema version in use")
        }
        NodeEvent::Schema(cassio_core::schema_agreement::AgreementEvent::Abandoned {
            slot,
            chosen_from,
        }) => {
            tracing::info!(slot, chosen_from = %chosen_from, "schema proposal lost to another node's for the same version; retrying at the next")
        }
        NodeEvent::Schema(cassio_core::schema_agreement::AgreementEvent::Conflict {
            version,
            ours,
            theirs,
        }) => {
            metrics::counter!("cassio_schema_conflicts_total").increment(1);
            tracing::error!(version, ours = %ours, theirs = %theirs, "two different schemas carry the same version: parts of this cluster were founded apart; this node keeps its own")
        }
        NodeEvent::NotOwner { from } => {
            metrics::counter!("cassio_requests_not_owned_total").increment(1);
            tracing::debug!(%from, "refused a replica request for a key this node does not hold (the coordinator's view of the ring is behind)")
        }
        NodeEvent::Joined { took, keys } => {
            tracing::info!(
                took_secs = took.as_secs_f64(),
                keys,
                "joined: every node of the new ring has synced the ranges it gains; Normal, owning this node's tokens"
            )
        }
        NodeEvent::RemovedDead { node } => {
            tracing::info!(node = %node, "dead node removed: its ranges are synced on the other nodes; it is off the ring and forgotten")
        }
        NodeEvent::HandedOver => {
            tracing::info!("every node gaining this node's ranges has synced them: announcing Left")
        }
        NodeEvent::TransitionSynced { transition } => {
            tracing::info!(
                transition = format_args!("{transition:016x}"),
                "synced the ranges this node gains in a ring change (a node joining or leaving)"
            )
        }
        NodeEvent::PurgeWatermark { micros } => {
            metrics::gauge!("cassio_purge_watermark_timestamp_seconds").set(*micros as f64 / 1e6);
            tracing::debug!(micros, "tombstones below the new watermark may be purged")
        }
        NodeEvent::Restamped { from, to } => {
            metrics::counter!("cassio_writes_restamped_total").increment(1);
            tracing::debug!(%from, %to, "write re-stamped above a newer version")
        }
    }
}

fn membership_event_name(m: &MembershipEvent) -> &'static str {
    match m {
        MembershipEvent::Joined(_) => "joined",
        MembershipEvent::Down(_) => "down",
        MembershipEvent::Up(_) => "up",
        MembershipEvent::Restarted { .. } => "restarted",
        MembershipEvent::StatusChanged { .. } => "status_changed",
        MembershipEvent::Removed { .. } => "removed",
    }
}

fn blocking_size(store: Arc<dyn Store>, tx: mpsc::UnboundedSender<u64>) {
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(store.approximate_size());
    });
}

impl Driver {
    /// Runs until told to shut down (or until every handle and the control
    /// channel are gone), then fails what is in flight and flushes storage.
    pub(crate) async fn run(self) {
        let Driver {
            node,
            clock,
            state_file,
            transport,
            store,
            hints,
            mut commands,
            mut control,
            mode,
            limits,
            op_timeout,
            hints_enabled,
            left,
        } = self;
        let cluster = node.codec().cluster.clone();
        let gossip_interval = node.membership().config().interval;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<DoneBatch>();
        let workers = match mode {
            StorageMode::Workers { threads } => {
                match Workers::start(threads, store.clone(), hints.clone(), done_tx.clone()) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::error!(error = %e, "could not start storage threads; running storage on blocking tasks");
                        None
                    }
                }
            }
            _ => None,
        };
        let mode = match (mode, &workers) {
            (StorageMode::Workers { .. }, None) => StorageMode::BlockingPerOp,
            (m, _) => m,
        };
        let (frames_tx, mut frames_rx) = mpsc::channel::<Frames>(FRAME_QUEUE);
        let recv_task = tokio::spawn(recv_loop(transport.clone(), frames_tx));
        let (load_tx, mut load_rx) = mpsc::unbounded_channel::<u64>();
        let mut load_tick = tokio::time::interval(LOAD_INTERVAL);
        let mut join_ticks: u32 = 0;
        load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut r = Running {
            node,
            clock,
            state_file,
            transport,
            store,
            hints,
            mode,
            workers,
            done_tx,
            next_request: 1,
            requests: HashMap::new(),
            storage: StorageQueue::new(limits, op_timeout),
            peers: HashMap::new(),
            cluster,
            stopping: false,
            rounds_ended: 0,
            recent_rounds: VecDeque::new(),
            hints_enabled,
            request_stats: RequestStats::new(std::time::Instant::now()),
            decommissioning: false,
        };
        r.drain();
        r.dispatch_storage();

        let mut leave_deadline: Option<tokio::time::Instant> = None;
        let mut left_at: Option<tokio::time::Instant> = None;
        let mut left_signalled = false;
        let mut finish: Option<oneshot::Sender<Result<(), ShutdownError>>> = None;
        let mut commands_open = true;

        // The core instant the last timer turn handled, while no other input
        // came since: if the core then asks again for a time not after it,
        // it has nothing new to do then, and waking at once would spin and
        // (timers being served first) starve every other input.
        let mut last_timer: Option<cassio_core::Instant> = None;
        loop {
            let due = r.node.poll_timeout();
            let wake = match (due, last_timer) {
                (Some(t), Some(last)) if t <= last => {
                    metrics::counter!("cassio_timer_spins_total").increment(1);
                    tracing::debug!(
                        due = t.as_micros(),
                        "the core asked again for a timeout already handled; waking 1 ms later"
                    );
                    tokio::time::Instant::now() + Duration::from_millis(1)
                }
                (Some(t), _) => r.clock.to_tokio(t),
                (None, _) => tokio::time::Instant::now() + Duration::from_secs(1),
            };
            last_timer = None;
            tokio::select! {
                biased;
                ctl = control.recv(), if finish.is_none() => {
                    let (leave, done) = match ctl {
                        Some(Control::Shutdown { leave, done }) => (leave, Some(done)),
                        // The running-node object was dropped: stop quietly.
                        None => (false, None),
                    };
                    let (tx, _rx_unused) = oneshot::channel();
                    finish = Some(done.unwrap_or(tx));
                    r.stopping = true;
                    if leave && r.node.has_left() {
                        // A decommission completed already: nothing left to hand over.
                        break;
                    }
                    if leave {
                        match r.node.leave(r.clock.now()) {
                            Ok(()) => {
                                tracing::info!("leaving the cluster: Leaving until the nodes that gain this node's ranges have synced them");
                                r.drain();
                                // The handover takes a request timeout, a few
                                // gossip rounds and one anti-entropy round;
                                // bounded so shutdown always ends.
                                leave_deadline = Some(tokio::time::Instant::now() + LEAVE_HANDOVER_LIMIT);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "not leaving the cluster; stopping as a member that will come back");
                                break;
                            }
                        }
                    } else {
                        break;
                    }
                }
                // Timers come before the data inputs: under a flood of frames
                // or requests, gossip rounds and the failure detector must
                // still run on time, or a busy node would be convicted.
                _ = tokio::time::sleep_until(wake) => {
                    let now = r.clock.now();
                    r.node.handle_timeout(now);
                    r.drain();
                    last_timer = Some(now.mono);
                }
                Some(size) = load_rx.recv() => {
                    metrics::gauge!("cassio_storage_bytes").set(size as f64);
                    r.node.set_load(size);
                    r.drain();
                }
                _ = load_tick.tick() => {
                    blocking_size(r.store.clone(), load_tx.clone());
                    r.record_membership_gauges();
                    // The first tick fires at once; log from the second
                    // (2 s in), then every 10 s.
                    let log_join = join_ticks % JOIN_LOG_EVERY_TICKS == 1;
                    join_ticks = join_ticks.wrapping_add(1);
                    if log_join {
                        if let Some(p) = r.join_progress() {
                            let s = r.node.repair_status();
                            tracing::info!(
                                elapsed_secs = p.elapsed_secs,
                                items_received = s.items_pulled,
                                bytes_exchanged = s.bytes_sent,
                                keys_held = s.tree_items,
                                "joining: syncing the ranges this node gains"
                            );
                        }
                    }
                }
                Some(batch) = done_rx.recv() => {
                    r.storage_done(batch);
                    let mut n = 0;
                    while n < MAX_PER_TURN {
                        match done_rx.try_recv() {
                            Ok(b) => { n += 1; r.storage_done(b) }
                            Err(_) => break,
                        }
                    }
                }
                // Back-pressure: while storage is saturated, frames wait in
                // the (bounded) channel and the transport behind it.
                Some((frames, permit)) = frames_rx.recv(), if !r.storage.saturated() => {
                    let mut n = frames.len();
                    r.deliver_frames(&frames);
                    drop(permit);
                    while n < MAX_PER_TURN && !r.storage.saturated() {
                        match frames_rx.try_recv() {
                            Ok((frames, permit)) => {
                                n += frames.len();
                                r.deliver_frames(&frames);
                                drop(permit);
                            }
                            Err(_) => break,
                        }
                    }
                }
                cmd = commands.recv(), if commands_open => {
                    match cmd {
                        Some(cmd) => {
                            r.command(cmd);
                            let mut n = 0;
                            while n < MAX_PER_TURN {
                                match commands.try_recv() {
                                    Ok(cmd) => { n += 1; r.command(cmd) }
                                    Err(_) => break,
                                }
                            }
                        }
                        // Every handle is gone; keep serving peers until told to stop.
                        None => commands_open = false,
                    }
                }
            }
            r.dispatch_storage();
            if leave_deadline.is_some() || r.decommissioning {
                let now = tokio::time::Instant::now();
                if r.node.has_left() && left_at.is_none() {
                    tracing::info!("announced Left to the cluster");
                    left_at = Some(now);
                }
                let spread = left_at.is_some_and(|t| now >= t + gossip_interval * 2);
                if spread && leave_deadline.is_some() {
                    break;
                }
                if spread && !left_signalled {
                    // An API decommission has no deadline (the operator
                    // follows it and may stop the node); once done, the
                    // host stops the node.
                    left_signalled = true;
                    tracing::info!("decommission complete: this node left the cluster; stopping");
                    let _ = left.send(true);
                }
            }
            if let Some(deadline) = leave_deadline {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    tracing::warn!(
                        limit_secs = LEAVE_HANDOVER_LIMIT.as_secs(),
                        "stopping while still Leaving: the nodes gaining this node's ranges had not all synced them, so it stays on the ring (down) and nothing it holds is lost; start it again with --leave-on-exit and stop it to finish leaving"
                    );
                    break;
                }
            }
        }

        // Stop accepting: requests still queued in the channel are refused,
        // requests in flight fail with ShuttingDown.
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            if let Command::Request(_, reply) = cmd {
                let _ = reply.send(Err(RequestError::Client(
                    cassio_core::ClientError::ShuttingDown,
                )));
            }
        }
        r.node.shutdown(r.clock.now());
        r.drain();
        for (_, p) in r.requests.drain() {
            let _ = p.reply.send(Err(RequestError::NotRunning));
        }
        // Let storage already asked for finish (queued operations run as
        // running ones complete), so flush covers it.
        let waited = tokio::time::Instant::now() + Duration::from_secs(10);
        r.dispatch_storage();
        while r.storage.in_flight() > 0 {
            match tokio::time::timeout_at(waited, done_rx.recv()).await {
                Ok(Some(b)) => {
                    r.storage_done(b);
                    r.dispatch_storage();
                }
                _ => break,
            }
        }
        let joins = r.workers.take().map(Workers::stop).unwrap_or_default();
        let store = r.store.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            for j in joins {
                let _ = j.join();
            }
            store.flush()?;
            store.sync()
        })
        .await;
        let result = match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ShutdownError::Storage(e.to_string())),
            Err(_) => Err(ShutdownError::DriverGone),
        };
        match &result {
            Ok(()) => tracing::info!("storage flushed and synced"),
            Err(e) => tracing::error!(error = %e, "storage flush at shutdown failed"),
        }
        r.peers.clear();
        recv_task.abort();
        r.transport.close().await;
        tracing::info!(node = %NodeId(r.node.id().0), "node stopped");
        if let Some(done) = finish {
            let _ = done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_keys_and_values_are_refused_with_bad_request() {
        let big_key = Bytes::from(vec![0u8; MAX_KEY_LEN + 1]);
        assert!(matches!(
            check_request(&ClientRequest::get(big_key)),
            Err(RequestError::BadRequest(_))
        ));
        let big_value = Bytes::from(vec![0u8; MAX_VALUE_LEN + 1]);
        assert!(matches!(
            check_request(&ClientRequest::put("k", big_value)),
            Err(RequestError::BadRequest(_))
        ));
        assert!(check_request(&ClientRequest::put("k", "v")).is_ok());
    }

    #[test]
    fn clock_maps_tokio_time_monotonically() {
        let c = Clock::new();
        let a = c.instant();
        std::thread::sleep(Duration::from_millis(2));
        let b = c.instant();
        assert!(b > a);
        assert!(c.to_tokio(b) >= c.to_tokio(a));
        // The reading the core gets carries the wall clock too.
        let both = c.now();
        assert!(both.mono >= b);
        assert!(both.wall_micros.is_some_and(|w| w > 1_600_000_000_000_000));
    }
}
