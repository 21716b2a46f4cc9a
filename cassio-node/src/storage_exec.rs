//! Running the core's storage operations, bounded: how many (and how many
//! bytes) are handed to the store at once, what waits, what is dropped.
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
//! core gets an error result, as for a failed operation. A store that
//! panics fails that operation only: the panic is caught and reported to
//! the core as an error, and the node runs on.
//!
//! Metrics: `cassio_storage_queue_depth` and `cassio_storage_in_flight`
//! (gauges), `cassio_storage_dropped_total{reason="deadline"}`,
//! `cassio_storage_panics_total`.

use cassio_core::{StorageOp, StorageResult, StorageToken, Store};
use std::collections::VecDeque;
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

fn op_bytes(op: &StorageOp) -> usize {
    // Fixed cost of the operation itself (token, version, bookkeeping).
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match op {
            StorageOp::Apply { key, version } => {
                key.len() + version.value.as_ref().map_or(0, |v| v.len())
            }
            StorageOp::Get { key } => key.len(),
        }
}

/// The failed result of `op`, of the kind the core expects for it.
pub(crate) fn failed(op: &StorageOp, why: String) -> StorageResult {
    match op {
        StorageOp::Apply { .. } => StorageResult::Applied(Err(why)),
        StorageOp::Get { .. } => StorageResult::Got(Err(why)),
    }
}

fn run_op(store: &dyn Store, op: &StorageOp) -> StorageResult {
    match op {
        StorageOp::Apply { key, version } => {
            StorageResult::Applied(store.apply(key, version).map_err(|e| e.to_string()))
        }
        StorageOp::Get { key } => StorageResult::Got(store.get(key).map_err(|e| e.to_string())),
    }
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

/// Runs `job` unless its deadline passed; a panic in the store becomes an
/// error result.
pub(crate) fn execute(store: &dyn Store, job: Job) -> Done {
    let Job {
        token,
        op,
        deadline,
        bytes,
    } = job;
    let result = if Instant::now() > deadline {
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
        match catch_unwind(AssertUnwindSafe(|| run_op(store, &op))) {
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
                        .map(|job| execute(store.as_ref(), job))
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
        }
    }

    /// Queues one operation the core asked for.
    pub(crate) fn push(&mut self, token: StorageToken, op: StorageOp) {
        let bytes = op_bytes(&op);
        self.waiting_bytes += bytes;
        self.waiting.push_back(Job {
            token,
            op,
            deadline: Instant::now() + self.op_timeout,
            bytes,
        });
    }

    /// Takes the operations that may start now (counting them in flight)
    /// and those that expired while waiting.
    pub(crate) fn dispatch(&mut self) -> Dispatch {
        let mut d = Dispatch::default();
        let now = Instant::now();
        while let Some(front) = self.waiting.front() {
            let expired = now > front.deadline;
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
        d
    }

    /// Records that a job handed out by [`StorageQueue::dispatch`] ended.
    pub(crate) fn completed(&mut self, bytes: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// As many operations (or bytes) wait as may run, besides those that
    /// run or could start now: take no new work. (Counted over both, so
    /// operations queued in one loop turn, before the turn's dispatch,
    /// do not count as waiting while free slots would take them.)
    pub(crate) fn saturated(&self) -> bool {
        let held = self.in_flight + self.waiting.len();
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
            },
        }
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
        q.completed(d.run[0].bytes);
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
        let d = execute(&Panics, job(apply(1), far));
        match d.result {
            StorageResult::Applied(Err(e)) => assert!(e.contains("disk on fire"), "{e}"),
            other => panic!("expected a failed apply, got {other:?}"),
        }
        let get = StorageOp::Get {
            key: Bytes::from_static(b"k"),
        };
        assert_eq!(
            execute(&Panics, job(get.clone(), far)).result,
            StorageResult::Got(Ok(None))
        );
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(
            execute(&Panics, job(get, past)).result,
            StorageResult::Got(Err(e)) if e.contains("deadline")
        ));
    }
}
