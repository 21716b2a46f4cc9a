//! The receiving half both transports share: frames from every inbound
//! connection meet in one queue that `recv` drains. The queue is bounded in
//! bytes, so a slow consumer slows the senders (their connections stop being
//! read) instead of growing memory.

use bytes::Bytes;
use cassio_core::{InboundFrame, NodeId, TransportError};
use core::net::SocketAddr;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

/// Counted as if every frame were at least this long, so a flood of empty
/// frames is bounded too.
const PER_FRAME_OVERHEAD: usize = 64;

/// Counters for inbound connections, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Inbound connections that completed TLS and the handshake.
    pub inbound_accepted: u64,
    /// Inbound connections refused: TLS failure, garbage, wrong cluster or
    /// version, handshake timeout.
    pub inbound_refused: u64,
    /// Inbound connections closed because a frame was oversize or malformed.
    pub inbound_bad_frames: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    bad_frames: AtomicU64,
}

/// Frames read together, and the inbox space they hold until the last of
/// them is taken.
type Batch = (Vec<InboundFrame>, OwnedSemaphorePermit);

#[derive(Debug)]
struct Receiving {
    rx: mpsc::UnboundedReceiver<Batch>,
    pending: std::collections::VecDeque<InboundFrame>,
    held: Option<OwnedSemaphorePermit>,
}

impl Receiving {
    fn pop(&mut self) -> Option<InboundFrame> {
        let frame = self.pending.pop_front()?;
        if self.pending.is_empty() {
            // The batch is fully handed over: its bytes no longer count.
            self.held = None;
        }
        Some(frame)
    }
}

/// The queue of received frames.
#[derive(Debug)]
pub struct Inbox {
    tx: mpsc::UnboundedSender<Batch>,
    rx: tokio::sync::Mutex<Receiving>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    closed: watch::Sender<bool>,
    counters: Counters,
}

impl Inbox {
    /// An inbox holding at most `budget_bytes` of undelivered frames (at
    /// least one frame always fits, whatever its size).
    pub fn new(budget_bytes: usize) -> Arc<Self> {
        let budget_bytes = budget_bytes.clamp(PER_FRAME_OVERHEAD, u32::MAX as usize);
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Inbox {
            tx,
            rx: tokio::sync::Mutex::new(Receiving {
                rx,
                pending: Default::default(),
                held: None,
            }),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            closed: watch::channel(false).0,
            counters: Counters::default(),
        })
    }

    /// Hands a received frame to `recv`, waiting while the inbox is full;
    /// `Err(Closed)` once the transport is closed. `peer_id` is the node id
    /// the connection's peer certificate names (`None` without TLS).
    pub async fn deliver(
        &self,
        from: SocketAddr,
        peer_id: Option<NodeId>,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        self.deliver_batch(vec![InboundFrame {
            from,
            payload,
            peer_id,
        }])
        .await
    }

    /// Hands several frames to `recv` at once (one wake-up instead of many).
    pub async fn deliver_batch(&self, frames: Vec<InboundFrame>) -> Result<(), TransportError> {
        if frames.is_empty() {
            // `recv` takes a batch per wake-up: an empty one would wake it
            // with nothing to hand over.
            return Ok(());
        }
        let bytes: usize = frames
            .iter()
            .map(|f| f.payload.len() + PER_FRAME_OVERHEAD)
            .sum();
        let cost = bytes.min(self.budget_bytes);
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(cost as u32)
            .await
            .map_err(|_| TransportError::Closed)?;
        self.tx
            .send((frames, permit))
            .map_err(|_| TransportError::Closed)
    }

    /// The next frame; `Err(Closed)` once [`Inbox::close`] was called.
    pub async fn recv(&self) -> Result<InboundFrame, TransportError> {
        let mut state = self.filled().await?;
        state.pop().ok_or(TransportError::Closed)
    }

    /// Waits for a frame, then appends it and every frame already received
    /// to `out`, up to `max` in all (at least one); returns how many.
    /// `Err(Closed)` once [`Inbox::close`] was called.
    pub async fn recv_many(
        &self,
        out: &mut Vec<InboundFrame>,
        max: usize,
    ) -> Result<usize, TransportError> {
        let mut state = self.filled().await?;
        let mut taken = 0;
        while taken < max.max(1) {
            if let Some(frame) = state.pop() {
                out.push(frame);
                taken += 1;
                continue;
            }
            // The batch in hand is spent (its permit released by `pop`):
            // take the next one only if it is already there.
            match state.rx.try_recv() {
                Ok((frames, permit)) => {
                    state.pending.extend(frames);
                    state.held = Some(permit);
                }
                Err(_) => break,
            }
        }
        if taken == 0 {
            return Err(TransportError::Closed);
        }
        Ok(taken)
    }

    /// The receiving state with at least one frame pending, waiting for a
    /// batch if none is; `Err(Closed)` once [`Inbox::close`] was called.
    async fn filled(&self) -> Result<tokio::sync::MutexGuard<'_, Receiving>, TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        let mut closed = self.closed.subscribe();
        let mut state = tokio::select! {
            state = self.rx.lock() => state,
            _ = closed.wait_for(|c| *c) => return Err(TransportError::Closed),
        };
        if state.pending.is_empty() {
            let batch = tokio::select! {
                biased;
                _ = closed.wait_for(|c| *c) => return Err(TransportError::Closed),
                batch = state.rx.recv() => batch,
            };
            let Some((frames, permit)) = batch else {
                return Err(TransportError::Closed);
            };
            state.pending.extend(frames);
            state.held = Some(permit);
        }
        Ok(state)
    }

    /// Wakes every `recv` with `Closed` and refuses further deliveries.
    pub fn close(&self) {
        self.closed.send_replace(true);
        self.budget.close();
    }

    /// Whether [`Inbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Counts an inbound connection that completed its handshake.
    pub fn note_accepted(&self) {
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an inbound connection refused before or at the handshake.
    pub fn note_refused(&self) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an inbound connection closed for a bad frame.
    pub fn note_bad_frame(&self) {
        self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            inbound_accepted: self.counters.accepted.load(Ordering::Relaxed),
            inbound_refused: self.counters.refused.load(Ordering::Relaxed),
            inbound_bad_frames: self.counters.bad_frames.load(Ordering::Relaxed),
        }
    }
}

/// The background tasks of one transport; all are aborted on shutdown, or
/// when the last handle is dropped.
#[derive(Debug, Default)]
pub struct Tasks {
    set: parking_lot::Mutex<Option<JoinSet<()>>>,
}

impl Tasks {
    /// An empty, running set.
    pub fn new() -> Arc<Self> {
        Arc::new(Tasks {
            set: parking_lot::Mutex::new(Some(JoinSet::new())),
        })
    }

    /// Spawns `fut` on the current runtime; returns false (and drops it)
    /// after shutdown.
    pub fn spawn<F>(&self, fut: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_abortable(fut).is_some()
    }

    /// Spawns `fut` and returns a handle that stops it alone; `None` (and
    /// `fut` dropped) after shutdown.
    pub fn spawn_abortable<F>(&self, fut: F) -> Option<AbortHandle>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut guard = self.set.lock();
        let set = guard.as_mut()?;
        // Reap finished tasks so a long-lived transport with many short
        // connections does not accumulate handles.
        while set.try_join_next().is_some() {}
        Some(set.spawn(fut))
    }

    /// Aborts every task.
    pub fn shutdown(&self) {
        let set = self.set.lock().take();
        if let Some(mut set) = set {
            set.abort_all();
        }
    }
}
