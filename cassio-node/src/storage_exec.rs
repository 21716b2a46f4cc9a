//! Running the core's storage operations, bounded: how many (and how many
//! bytes) are handed to the store at once, what waits, what is dropped.
//! Store operations run against the node's [`Store`], hint operations
//! against its [`HintLog`].
//!
//! The driver queues every `Output::Storage` here. [`StorageQueue`] hands
//! operations to the executor only while fewer than
//! [`StorageLimits::max_in_flight`] (and
//! [`StorageLimits::max_in_flight_bytes`]) are running; the rest wait in
//! order. When as many wait as may run, the queue is *saturated* and the
//! driver stops taking new work: it stops reading peer frames (back-pressure
//! through the transport) and answers client requests
//! [`cassio_core::ClientError::Overloaded`]. So a stalled disk costs a
//! bounded amount of memory instead of an out-of-memory kill.
//!
//! An operation that waited past its deadline (enqueue time plus the
//! request timeout: the coordinator that asked for it, this node or a peer
//! with the same setting, has answered its client already) is not run; the
//! core gets an error result, as for a failed operation (except
//! `SetPurgeWatermark`, which has no error result and only raises a number,
//! so it always runs). A store that
//! panics fails that operation only: the panic is caught and reported to
//! the core as an error, and the node runs on.
//!
//! Metrics: `cassio_storage_queue_depth` and `cassio_storage_in_flight`
//! (gauges), `cassio_storage_dropped_total{reason="deadline"}`,
//! `cassio_storage_panics_total`.

use cassio_core::{HintLog, Key, StorageOp, StorageResult, StorageToken, Store};
use std::collections::VecDeque;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Storage operations handed to the store at once, by default.
pub const DEFAULT_STORAGE_MAX_IN_FLIGHT: usize = 1024;
/// Bytes (keys and values) of storage operations handed to the store at
/// once, by default: 16 maximal values.
pub const DEFAULT_STORAGE_MAX_IN_FLIGHT_BYTES: usize = 256 * 1024 * 1024;

/// Bounds on storage work; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageLimits {
    /// Operations handed to the store and not yet completed; as many more
    /// may wait before the node pushes back. At least 1.
    pub max_in_flight: usize,
    /// Their keys' and values' bytes. One operation larger than this still
    /// runs, alone.
    pub max_in_flight_bytes: usize,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            max_in_flight: DEFAULT_STORAGE_MAX_IN_FLIGHT,
            max_in_flight_bytes: DEFAULT_STORAGE_MAX_IN_FLIGHT_BYTES,
        }
    }
}

/// One storage operation on its way to the store.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) token: StorageToken,
    pub(crate) op: StorageOp,
    /// Past this, running it helps no one.
    pub(crate) deadline: Instant,
    /// What it counts against [`StorageLimits::max_in_flight_bytes`].
    pub(crate) bytes: usize,
}

/// A completed [`Job`].
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) token: StorageToken,
    pub(crate) result: StorageResult,
    pub(crate) bytes: usize,
}

/// Completions, in the batches they were run in.
pub(crate) type DoneBatch = Vec<Done>;

fn value_len(v: &cassio_core::Versioned) -> usize {
    v.value.as_ref().map_or(0, |v| v.len())
}

fn bound_len(b: &Bound<Key>) -> usize {
    match b {
        Bound::Included(k) | Bound::Excluded(k) => k.len(),
        Bound::Unbounded => 0,
    }
}

/// What `op` counts against [`StorageLimits::max_in_flight_bytes`]: the
/// keys and values it carries (a batch: all of its items'), or, for a hint
/// read, the bytes it asks for (capped at one maximal value: a read
/// returns at least one hint whatever it asks, and a larger charge would
/// only make it wait to run alone).
fn op_bytes(op: &StorageOp) -> usize {
    // Fixed cost of the operation itself (token, version, bookkeeping).
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match op {
            StorageOp::Apply { key, version } => key.len() + value_len(version),
            StorageOp::Get { key } => key.len(),
            StorageOp::ApplyBatch { items } => {
                items.iter().map(|(k, v)| k.len() + value_len(v)).sum()
            }
            StorageOp::GetBatch { keys } => keys.iter().map(|k| k.len()).sum(),
            StorageOp::Digests { start, end, .. } | StorageOp::Range { start, end, .. } => {
                bound_len(start) + bound_len(end)
            }
            StorageOp::SetPurgeWatermark { .. }
            | StorageOp::HintTrim { .. }
            | StorageOp::HintDrop { .. }
            | StorageOp::HintBacklog => 0,
            StorageOp::HintAppend { hint, .. } => hint.key.len() + value_len(&hint.version),
            StorageOp::HintRead { max_bytes, .. } => usize::try_from(*max_bytes)
                .unwrap_or(usize::MAX)
                .min(crate::hint_log::MAX_VALUE_LEN),
        }
}

/// Whether `op` is dropped once its deadline passed. `SetPurgeWatermark`
/// is not: it has no error result to answer with, and it is cheap.
fn may_expire(op: &StorageOp) -> bool {
    !matches!(op, StorageOp::SetPurgeWatermark { .. })
}

/// The failed result of `op`, of the kind the core expects for it.
/// (`SetPurgeWatermark` has none: it is answered as set, and only reaches
/// here if the store panicked, which is logged.)
pub(crate) fn failed(op: &StorageOp, why: String) -> StorageResult {
    match op {
        StorageOp::Apply { .. } => StorageResult::Applied(Err(why)),
        StorageOp::Get { .. } => StorageResult::Got(Err(why)),
        StorageOp::ApplyBatch { .. } => StorageResult::AppliedBatch(Err(why)),
        StorageOp::GetBatch { .. } => StorageResult::GotBatch(Err(why)),
        StorageOp::Digests { .. } => StorageResult::Digests(Err(why)),
        StorageOp::Range { .. } => StorageResult::Ranged(Err(why)),
        StorageOp::SetPurgeWatermark { .. } => StorageResult::WatermarkSet,
        StorageOp::HintAppend { .. } => StorageResult::HintAppended(Err(why)),
        StorageOp::HintRead { .. } => StorageResult::HintsRead(Err(why)),
        StorageOp::HintTrim { .. } | StorageOp::HintDrop { .. } => {
            StorageResult::HintsTrimmed(Err(why))
        }
        StorageOp::HintBacklog => StorageResult::HintBacklog(Err(why)),
    }
}

fn bound_slice(b: &Bound<Key>) -> Bound<&[u8]> {
    b.as_ref().map(|k| &k[..])
}

fn run_op(store: &dyn Store, hints: &dyn HintLog, op: &StorageOp) -> StorageResult {
    let text = |e: cassio_core::StoreError| e.to_string();
    match op {
        StorageOp::Apply { key, version } => {
            // A deliberately broken build for the multi-host nemesis: with
            // FAILPOINTS=storage-apply-drop=..., the write is reported kept
            // (so the replica acknowledges it) but never reaches the store.
            // The nemesis's checker must catch this; see tests/netns_nemesis.rs.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("storage-apply-drop", |_| {
                StorageResult::Applied(Ok(cassio_core::ApplyOutcome::Kept { replaced: None }))
            });
            StorageResult::Applied(store.apply_replacing(key, version).map_err(text))
        }
        StorageOp::Get { key } => StorageResult::Got(store.get(key).map_err(text)),
        // In order; the first error fails the batch (the items before it
        // stay applied, which the core treats like any failed write).
        StorageOp::ApplyBatch { items } => StorageResult::AppliedBatch(
            items
                .iter()
                .map(|(k, v)| store.apply_replacing(k, v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(text),
        ),
        StorageOp::GetBatch { keys } => StorageResult::GotBatch(
            keys.iter()
                .map(|k| store.get(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(text),
        ),
        StorageOp::Digests { start, end, limit } => StorageResult::Digests(
            store
                .digests(bound_slice(start), bound_slice(end), *limit)
                .map_err(text),
        ),
        StorageOp::Range { start, end, limit } => StorageResult::Ranged(
            store
                .range(bound_slice(start), bound_slice(end), *limit)
                .map_err(text),
        ),
        StorageOp::SetPurgeWatermark { micros } => {
            store.set_purge_watermark(*micros);
            StorageResult::WatermarkSet
        }
        StorageOp::HintAppend { target, hint } => {
            StorageResult::HintAppended(hints.append(*target, hint).map_err(text))
        }
        StorageOp::HintRead {
            target,
            after,
            max_bytes,
        } => StorageResult::HintsRead(hints.read(*target, *after, *max_bytes).map_err(text)),
        StorageOp::HintTrim { target, through } => {
            StorageResult::HintsTrimmed(hints.trim(*target, *through).map_err(text))
        }
        StorageOp::HintDrop { target } => {
            StorageResult::HintsTrimmed(hints.drop_target(*target).map_err(text))
        }
        StorageOp::HintBacklog => StorageResult::HintBacklog(hints.backlog().map_err(text)),
    }
}

/// Runs `job` at once when the store can do it without waiting (see
/// [`Store::get_if_cached`] and [`Store::apply_replacing_if_cached`]): a
/// read or write whose data is in memory is then answered on the event
/// loop, without the two thread hand-offs of a worker (profiled as most of
/// a single node's per-request overhead beyond the socket). Anything else,
/// and anything the store declines, is `None`, for the workers. A
/// panicking store is answered as [`execute`] answers it.
pub(crate) fn run_if_cached(store: &dyn Store, job: &Job) -> Option<Done> {
    let text = |e: cassio_core::StoreError| e.to_string();
    let attempt = catch_unwind(AssertUnwindSafe(|| match &job.op {
        StorageOp::Apply { key, version } => {
            // The same deliberately broken build as `run_op`'s: the write
            // is reported kept but never stored.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("storage-apply-drop", |_| {
                Some(StorageResult::Applied(Ok(
                    cassio_core::ApplyOutcome::Kept { replaced: None },
                )))
            });
            store
                .apply_replacing_if_cached(key, version)
                .map(|r| StorageResult::Applied(r.map_err(text)))
        }
        StorageOp::Get { key } => store
            .get_if_cached(key)
            .map(|r| StorageResult::Got(r.map_err(text))),
        _ => None,
    }));
    let result = match attempt {
        Ok(r) => r?,
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            metrics::counter!("cassio_storage_panics_total").increment(1);
            tracing::error!(panic = %text, "storage operation panicked; answered as failed");
            failed(&job.op, format!("storage operation panicked: {text}"))
        }
    };
    Some(Done {
        token: job.token,
        result,
        bytes: job.bytes,
    })
}

/// The text of a caught panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_string()
    }
}

/// Runs `job` unless its deadline passed; a panic in the store or the hint
/// log becomes an error result.
pub(crate) fn execute(store: &dyn Store, hints: &dyn HintLog, job: Job) -> Done {
    let Job {
        token,
        op,
        deadline,
        bytes,
    } = job;
    let result = if job_expired(&op, deadline, Instant::now()) {
        metrics::counter!("cassio_storage_dropped_total", "reason" => "deadline").increment(1);
        failed(
            &op,
            "storage operation dropped: its request's deadline passed while it was queued".into(),
        )
    } else {
        // Unwind safety: the store is shared behind `&self` and must keep
        // its own invariants under concurrent callers; a panic inside it is
        // the store's bug, and the worst outcome of continuing is further
        // errors from that store, which are reported the same way.
        match catch_unwind(AssertUnwindSafe(|| run_op(store, hints, &op))) {
            Ok(r) => r,
            Err(payload) => {
                let text = panic_text(payload.as_ref());
                metrics::counter!("cassio_storage_panics_total").increment(1);
                tracing::error!(panic = %text, "storage operation panicked; answered as failed");
                failed(&op, format!("storage operation panicked: {text}"))
            }
        }
    };
    Done {
        token,
        result,
        bytes,
    }
}

/// Background operations (anti-entropy scans and batches, hints, the purge
/// watermark) run at most this many at a time, only when no foreground
/// operation waits, and never count against client admission: repair and
/// hint delivery must not take capacity from clients.
const BACKGROUND_MAX_IN_FLIGHT: usize = 1;

/// Whether `op` is background work rather than a client's read or write
/// (or a replica's part of one).
fn is_background(op: &StorageOp) -> bool {
    // A row read is a client's read.
    !matches!(
        op,
        StorageOp::Apply { .. } | StorageOp::Get { .. } | StorageOp::Range { .. }
    )
}

/// Whether an operation queued with `deadline` is no longer worth running at `now`.
fn job_expired(op: &StorageOp, deadline: Instant, now: Instant) -> bool {
    may_expire(op) && now > deadline
}

/// Runs storage batches on dedicated threads. Threads end when the job
/// sender is dropped (after they finish what was queued).
pub(crate) struct Workers {
    jobs: Option<std::sync::mpsc::Sender<Vec<Job>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(
        n: usize,
        store: Arc<dyn Store>,
        hints: Arc<dyn HintLog>,
        done: mpsc::UnboundedSender<DoneBatch>,
    ) -> std::io::Result<Self> {
        // Unbounded as a channel, bounded by the queue: at most
        // `max_in_flight` operations are ever in it.
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Job>>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            let hints = hints.clone();
            let done = done.clone();
            let t = std::thread::Builder::new()
                .name(format!("cassio-storage-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next batch,
                    // so idle workers queue up on it and busy ones do not.
                    let batch = match rx.lock().recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    };
                    let results: DoneBatch = batch
                        .into_iter()
                        .map(|job| execute(store.as_ref(), hints.as_ref(), job))
                        .collect();
                    if done.send(results).is_err() {
                        return;
                    }
                })?;
            threads.push(t);
        }
        Ok(Workers {
            jobs: Some(tx),
            threads,
        })
    }

    pub(crate) fn submit(&self, batch: Vec<Job>) -> Result<(), Vec<Job>> {
        match &self.jobs {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }

    /// Stops the threads once they have drained their queue.
    pub(crate) fn stop(mut self) -> Vec<std::thread::JoinHandle<()>> {
        self.jobs = None;
        std::mem::take(&mut self.threads)
    }
}

/// What the driver may hand to the executor now, and what it must answer
/// as dropped.
#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    /// Jobs to run, in order.
    pub(crate) run: Vec<Job>,
    /// Jobs whose deadline passed while they waited.
    pub(crate) expired: Vec<Job>,
}

/// Storage operations waiting to run and running; see the module docs.
#[derive(Debug)]
pub(crate) struct StorageQueue {
    limits: StorageLimits,
    /// How long an operation stays worth running after it was queued.
    op_timeout: Duration,
    waiting: VecDeque<Job>,
    waiting_bytes: usize,
    in_flight: usize,
    in_flight_bytes: usize,
    /// Background operations waiting (see [`is_background`]).
    background: VecDeque<Job>,
    /// Tokens of the background operations running.
    background_running: std::collections::HashSet<StorageToken>,
}

impl StorageQueue {
    pub(crate) fn new(limits: StorageLimits, op_timeout: Duration) -> Self {
        StorageQueue {
            limits: StorageLimits {
                max_in_flight: limits.max_in_flight.max(1),
                max_in_flight_bytes: limits.max_in_flight_bytes.max(1),
            },
            op_timeout,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            background: VecDeque::new(),
            background_running: std::collections::HashSet::new(),
        }
    }

    /// Queues one operation the core asked for.
    pub(crate) fn push(&mut self, token: StorageToken, op: StorageOp) {
        let bytes = op_bytes(&op);
        let job = Job {
            token,
            op,
            deadline: Instant::now() + self.op_timeout,
            bytes,
        };
        if is_background(&job.op) {
            self.background.push_back(job);
        } else {
            self.waiting_bytes += bytes;
            self.waiting.push_back(job);
        }
    }

    /// Takes the operations that may start now (counting them in flight)
    /// and those that expired while waiting.
    pub(crate) fn dispatch(&mut self) -> Dispatch {
        let mut d = Dispatch::default();
        let now = Instant::now();
        while let Some(front) = self.waiting.front() {
            let expired = job_expired(&front.op, front.deadline, now);
            if !expired {
                if self.in_flight >= self.limits.max_in_flight {
                    break;
                }
                let fits = self.in_flight_bytes + front.bytes <= self.limits.max_in_flight_bytes;
                if !fits && self.in_flight > 0 {
                    break;
                }
            }
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.waiting_bytes -= job.bytes;
            if expired {
                d.expired.push(job);
            } else {
                self.in_flight += 1;
                self.in_flight_bytes += job.bytes;
                d.run.push(job);
            }
        }
        // Background work only in a slot no client operation waits for.
        while self.waiting.is_empty()
            && self.in_flight < self.limits.max_in_flight
            && self.background_running.len() < BACKGROUND_MAX_IN_FLIGHT
        {
            let Some(job) = self.background.pop_front() else {
                break;
            };
            self.in_flight += 1;
            self.in_flight_bytes += job.bytes;
            self.background_running.insert(job.token);
            d.run.push(job);
        }
        d
    }

    /// Records that a job handed out by [`StorageQueue::dispatch`] ended.
    pub(crate) fn completed(&mut self, token: StorageToken, bytes: usize) {
        self.background_running.remove(&token);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// As many operations (or bytes) wait as may run, besides those that
    /// run or could start now: take no new work. (Counted over both, so
    /// operations queued in one loop turn, before the turn's dispatch,
    /// do not count as waiting while free slots would take them.)
    /// Background operations do not count: they never delay admission.
    pub(crate) fn saturated(&self) -> bool {
        let held =
            self.in_flight.saturating_sub(self.background_running.len()) + self.waiting.len();
        let held_bytes = self.in_flight_bytes.saturating_add(self.waiting_bytes);
        held >= self.limits.max_in_flight.saturating_mul(2)
            || held_bytes >= self.limits.max_in_flight_bytes.saturating_mul(2)
    }

    /// Operations handed to the executor and not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Operations waiting to be handed out.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Publishes the queue's depth and the operations in flight.
    pub(crate) fn record_gauges(&self) {
        metrics::gauge!("cassio_storage_queue_depth").set(self.waiting.len() as f64);
        metrics::gauge!("cassio_storage_background_queue_depth").set(self.background.len() as f64);
        metrics::gauge!("cassio_storage_in_flight").set(self.in_flight as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cassio_core::{NodeId, Timestamp, Versioned};

    fn apply(n: usize) -> StorageOp {
        StorageOp::Apply {
            key: Bytes::from(format!("k{n}")),
            version: Versioned {
                ts: Timestamp::new(1, 0, NodeId(1)),
                value: Some(Bytes::from(vec![0u8; 100])),
                expires: None,
            },
        }
    }

    #[test]
    fn background_work_waits_for_clients_runs_one_at_a_time_and_never_saturates() {
        let mut q = StorageQueue::new(
            StorageLimits {
                max_in_flight: 2,
                max_in_flight_bytes: usize::MAX,
            },
            Duration::from_secs(60),
        );
        for i in 0..3 {
            q.push(StorageToken(100 + i), StorageOp::HintBacklog);
        }
        q.push(StorageToken(1), apply(1));
        q.push(StorageToken(2), apply(2));
        q.push(StorageToken(3), apply(3));
        assert!(!q.saturated(), "background work does not count");
        let d = q.dispatch();
        let tokens: Vec<u64> = d.run.iter().map(|j| j.token.0).collect();
        assert_eq!(tokens, vec![1, 2], "clients first");
        q.completed(StorageToken(1), d.run[0].bytes);
        q.completed(StorageToken(2), d.run[1].bytes);
        let d = q.dispatch();
        let tokens: Vec<u64> = d.run.iter().map(|j| j.token.0).collect();
        assert_eq!(tokens, vec![3, 100], "then one background operation");
        q.completed(StorageToken(3), d.run[0].bytes);
        assert_eq!(q.dispatch().run.len(), 0, "one background at a time");
        q.completed(StorageToken(100), d.run[1].bytes);
        let d = q.dispatch();
        assert_eq!(
            d.run.iter().map(|j| j.token.0).collect::<Vec<_>>(),
            vec![101]
        );
    }

    #[test]
    fn never_more_in_flight_than_the_cap_and_saturates_when_as_many_wait() {
        let mut q = StorageQueue::new(
            StorageLimits {
                max_in_flight: 3,
                max_in_flight_bytes: usize::MAX,
            },
            Duration::from_secs(60),
        );
        for i in 0..5 {
            q.push(StorageToken(i), apply(i as usize));
        }
        assert!(!q.saturated(), "three of the five could start at once");
        let d = q.dispatch();
        assert_eq!(d.run.len(), 3);
        assert_eq!((q.in_flight(), q.waiting()), (3, 2));
        assert!(!q.saturated());
        q.push(StorageToken(9), apply(9));
        assert!(q.saturated(), "3 waiting behind 3 in flight");
        assert!(q.dispatch().run.is_empty());
        q.completed(d.run[0].token, d.run[0].bytes);
        let d2 = q.dispatch();
        assert_eq!(d2.run.len(), 1);
        assert_eq!(d2.run[0].token, StorageToken(3), "in order");
        assert!(!q.saturated());
    }

    #[test]
    fn bytes_bound_what_runs_but_a_large_op_still_runs_alone() {
        let mut q = StorageQueue::new(
            StorageLimits {
                max_in_flight: 100,
                max_in_flight_bytes: 300,
            },
            Duration::from_secs(60),
        );
        for i in 0..4 {
            q.push(StorageToken(i), apply(i as usize));
        }
        // Each op counts 100 value bytes, 2 key bytes and 64 of overhead.
        assert_eq!(q.dispatch().run.len(), 1);
        let mut q = StorageQueue::new(
            StorageLimits {
                max_in_flight: 100,
                max_in_flight_bytes: 10,
            },
            Duration::from_secs(60),
        );
        q.push(StorageToken(1), apply(1));
        assert_eq!(q.dispatch().run.len(), 1, "alone, over the byte cap");
        q.push(StorageToken(2), apply(2));
        assert!(q.dispatch().run.is_empty());
    }

    #[test]
    fn expired_ops_are_handed_back_not_run() {
        let mut q = StorageQueue::new(StorageLimits::default(), Duration::ZERO);
        q.push(StorageToken(1), apply(1));
        std::thread::sleep(Duration::from_millis(2));
        let d = q.dispatch();
        assert!(d.run.is_empty());
        assert_eq!(d.expired.len(), 1);
        assert_eq!(q.in_flight(), 0);
    }

    struct Panics;
    impl Store for Panics {
        fn apply(&self, _: &[u8], _: &Versioned) -> Result<bool, cassio_core::StoreError> {
            panic!("disk on fire")
        }
        fn get(&self, _: &[u8]) -> Result<Option<Versioned>, cassio_core::StoreError> {
            Ok(None)
        }
        fn range(
            &self,
            _: std::ops::Bound<&[u8]>,
            _: std::ops::Bound<&[u8]>,
            _: usize,
        ) -> Result<Vec<(cassio_core::Key, Versioned)>, cassio_core::StoreError> {
            Ok(Vec::new())
        }
        fn flush(&self) -> Result<(), cassio_core::StoreError> {
            Ok(())
        }
        fn sync(&self) -> Result<(), cassio_core::StoreError> {
            Ok(())
        }
        fn set_purge_watermark(&self, _: u64) {}
    }

    #[test]
    fn a_panic_and_a_passed_deadline_become_error_results() {
        let job = |op, deadline| Job {
            token: StorageToken(1),
            op,
            deadline,
            bytes: 1,
        };
        let far = Instant::now() + Duration::from_secs(60);
        let hints = crate::hint_log::MemoryHintLog::new();
        let d = execute(&Panics, &hints, job(apply(1), far));
        match d.result {
            StorageResult::Applied(Err(e)) => assert!(e.contains("disk on fire"), "{e}"),
            other => panic!("expected a failed apply, got {other:?}"),
        }
        let get = StorageOp::Get {
            key: Bytes::from_static(b"k"),
        };
        assert_eq!(
            execute(&Panics, &hints, job(get.clone(), far)).result,
            StorageResult::Got(Ok(None))
        );
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(
            execute(&Panics, &hints, job(get, past)).result,
            StorageResult::Got(Err(e)) if e.contains("deadline")
        ));
    }

    /// Records the purge watermark it is given, over the reference store.
    #[derive(Default)]
    struct Watermarked {
        inner: conformance::MemStore,
        watermark: std::sync::atomic::AtomicU64,
    }
    impl Store for Watermarked {
        fn apply(&self, k: &[u8], v: &Versioned) -> Result<bool, cassio_core::StoreError> {
            self.inner.apply(k, v)
        }
        fn get(&self, k: &[u8]) -> Result<Option<Versioned>, cassio_core::StoreError> {
            self.inner.get(k)
        }
        fn range(
            &self,
            start: Bound<&[u8]>,
            end: Bound<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(cassio_core::Key, Versioned)>, cassio_core::StoreError> {
            self.inner.range(start, end, limit)
        }
        fn flush(&self) -> Result<(), cassio_core::StoreError> {
            Ok(())
        }
        fn sync(&self) -> Result<(), cassio_core::StoreError> {
            Ok(())
        }
        fn set_purge_watermark(&self, micros: u64) {
            self.watermark
                .fetch_max(micros, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn run(store: &dyn Store, hints: &dyn HintLog, op: StorageOp) -> StorageResult {
        let job = Job {
            token: StorageToken(1),
            op,
            deadline: Instant::now() + Duration::from_secs(60),
            bytes: 1,
        };
        execute(store, hints, job).result
    }

    fn version(micros: u64, v: &str) -> Versioned {
        Versioned::value(
            Timestamp::new(micros, 0, NodeId(1)),
            Bytes::from(v.to_owned()),
        )
    }

    #[test]
    fn store_ops_run_against_the_store() {
        use cassio_core::{ApplyOutcome, KeyDigest};
        let store = Watermarked::default();
        let hints = crate::hint_log::MemoryHintLog::new();
        let k = |s: &str| Bytes::from(s.to_owned());
        assert_eq!(
            run(
                &store,
                &hints,
                StorageOp::Apply {
                    key: k("a"),
                    version: version(5, "a5")
                }
            ),
            StorageResult::Applied(Ok(ApplyOutcome::Kept { replaced: None }))
        );
        assert_eq!(
            run(
                &store,
                &hints,
                StorageOp::Apply {
                    key: k("a"),
                    version: version(3, "a3")
                }
            ),
            StorageResult::Applied(Ok(ApplyOutcome::Superseded))
        );
        let batch = StorageOp::ApplyBatch {
            items: vec![
                (k("a"), version(9, "a9")),
                (k("b"), version(1, "b1")),
                (k("a"), version(2, "a2")),
            ],
        };
        assert_eq!(
            run(&store, &hints, batch),
            StorageResult::AppliedBatch(Ok(vec![
                ApplyOutcome::Kept {
                    replaced: Some(version(5, "a5"))
                },
                ApplyOutcome::Kept { replaced: None },
                ApplyOutcome::Superseded,
            ]))
        );
        assert_eq!(
            run(
                &store,
                &hints,
                StorageOp::GetBatch {
                    keys: vec![k("b"), k("zz"), k("a")]
                }
            ),
            StorageResult::GotBatch(Ok(vec![
                Some(version(1, "b1")),
                None,
                Some(version(9, "a9"))
            ]))
        );
        let digests = StorageOp::Digests {
            start: Bound::Excluded(k("a")),
            end: Bound::Unbounded,
            limit: 10,
        };
        assert_eq!(
            run(&store, &hints, digests),
            StorageResult::Digests(Ok(vec![KeyDigest::of(k("b"), &version(1, "b1"))]))
        );
        let digests = StorageOp::Digests {
            start: Bound::Included(k("a")),
            end: Bound::Excluded(k("b")),
            limit: 10,
        };
        assert_eq!(
            run(&store, &hints, digests),
            StorageResult::Digests(Ok(vec![KeyDigest::of(k("a"), &version(9, "a9"))]))
        );
        assert_eq!(
            run(&store, &hints, StorageOp::SetPurgeWatermark { micros: 77 }),
            StorageResult::WatermarkSet
        );
        assert_eq!(
            store.watermark.load(std::sync::atomic::Ordering::SeqCst),
            77
        );
    }

    #[test]
    fn hint_ops_run_against_the_hint_log() {
        use cassio_core::{Hint, HintBacklog};
        let store = Watermarked::default();
        let hints = crate::hint_log::MemoryHintLog::new();
        let hint = |i: u64| Hint {
            key: Bytes::from(format!("k{i}")),
            version: version(i, "v"),
            created_micros: 100 + i,
        };
        let t = NodeId(4);
        for i in 1..=3 {
            assert_eq!(
                run(
                    &store,
                    &hints,
                    StorageOp::HintAppend {
                        target: t,
                        hint: hint(i)
                    }
                ),
                StorageResult::HintAppended(Ok(i))
            );
        }
        assert_eq!(
            run(
                &store,
                &hints,
                StorageOp::HintRead {
                    target: t,
                    after: 1,
                    max_bytes: 1
                }
            ),
            StorageResult::HintsRead(Ok(vec![(2, hint(2))]))
        );
        assert_eq!(
            run(
                &store,
                &hints,
                StorageOp::HintTrim {
                    target: t,
                    through: 2
                }
            ),
            StorageResult::HintsTrimmed(Ok(()))
        );
        assert_eq!(
            run(&store, &hints, StorageOp::HintBacklog),
            StorageResult::HintBacklog(Ok(vec![(
                t,
                HintBacklog {
                    count: 1,
                    bytes: hint(3).charge(),
                    first_seq: 3,
                    last_seq: 3,
                    oldest_micros: 103,
                }
            )]))
        );
        assert_eq!(
            run(&store, &hints, StorageOp::HintDrop { target: t }),
            StorageResult::HintsTrimmed(Ok(()))
        );
        assert_eq!(
            run(&store, &hints, StorageOp::HintBacklog),
            StorageResult::HintBacklog(Ok(Vec::new()))
        );
        // The store saw none of it.
        assert!(store.inner.snapshot().is_empty());
    }

    #[test]
    fn batches_are_charged_by_their_summed_keys_and_values() {
        let items: Vec<_> = (0..3)
            .map(|i| (Bytes::from(format!("k{i}")), version(1, &"x".repeat(100))))
            .collect();
        assert_eq!(
            op_bytes(&StorageOp::ApplyBatch { items }),
            64 + 3 * (2 + 100)
        );
        let keys = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")];
        assert_eq!(op_bytes(&StorageOp::GetBatch { keys }), 64 + 5);
        let hint = cassio_core::Hint {
            key: Bytes::from_static(b"key"),
            version: version(1, "value"),
            created_micros: 1,
        };
        let append = StorageOp::HintAppend {
            target: NodeId(2),
            hint,
        };
        assert_eq!(op_bytes(&append), 64 + 8);
        let read = |max_bytes| StorageOp::HintRead {
            target: NodeId(2),
            after: 0,
            max_bytes,
        };
        assert_eq!(op_bytes(&read(4096)), 64 + 4096);
        assert_eq!(
            op_bytes(&read(u64::MAX)),
            64 + crate::hint_log::MAX_VALUE_LEN,
            "capped at one maximal value"
        );
    }

    #[test]
    fn a_purge_watermark_runs_even_past_its_deadline() {
        let mut q = StorageQueue::new(StorageLimits::default(), Duration::ZERO);
        q.push(StorageToken(1), apply(1));
        q.push(StorageToken(2), StorageOp::SetPurgeWatermark { micros: 9 });
        std::thread::sleep(Duration::from_millis(2));
        let d = q.dispatch();
        assert_eq!(d.expired.len(), 1);
        assert_eq!(d.run.len(), 1);
        let store = Watermarked::default();
        let hints = crate::hint_log::MemoryHintLog::new();
        let job = d.run.into_iter().next().expect("the watermark job");
        assert!(Instant::now() > job.deadline);
        assert_eq!(
            execute(&store, &hints, job).result,
            StorageResult::WatermarkSet
        );
        assert_eq!(store.watermark.load(std::sync::atomic::Ordering::SeqCst), 9);
    }
}
