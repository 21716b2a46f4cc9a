//! Overload and storage faults on a real driver: a store that stalls, a
//! store that panics, operations whose deadline passed while queued.

// Test helpers unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use cassio_core::{
    ApplyOutcome, ClientError, ClientRequest, ClientResponse, Consistency, Key, Store, StoreError,
    Versioned,
};
use cassio_node::driver::{StorageLimits, StorageMode};
use cassio_node::{NodeBuilder, NodeHandle, RequestError, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use parking_lot::{Condvar, Mutex};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// One test at a time: the metrics recorder is process-wide, and the
/// queue-depth gauge must be this test's node's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A store in front of [`MemStore`] that can stall (every call blocks
/// until released), panics on keys containing `boom`, and records how many
/// calls run at once and which keys it saw.
#[derive(Default)]
struct Faulty {
    inner: MemStore,
    stalled: Mutex<bool>,
    released: Condvar,
    running: AtomicUsize,
    max_running: AtomicUsize,
    seen: Mutex<Vec<Vec<u8>>>,
}

impl Faulty {
    fn stall(&self) {
        *self.stalled.lock() = true;
    }

    fn release(&self) {
        *self.stalled.lock() = false;
        self.released.notify_all();
    }

    fn enter(&self, key: &[u8]) -> Guard<'_> {
        self.seen.lock().push(key.to_vec());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let mut stalled = self.stalled.lock();
        while *stalled {
            // Bounded, so a failing test cannot hang the process.
            if self
                .released
                .wait_for(&mut stalled, Duration::from_secs(30))
                .timed_out()
            {
                break;
            }
        }
        drop(stalled);
        if key.windows(4).any(|w| w == b"boom") {
            self.running.fetch_sub(1, Ordering::SeqCst);
            panic!("the store panics on this key");
        }
        Guard(self)
    }

    fn saw(&self, needle: &[u8]) -> bool {
        self.seen
            .lock()
            .iter()
            .any(|k| k.windows(needle.len()).any(|w| w == needle))
    }
}

/// Releases a stalled store when dropped, so a failing assertion does not
/// leave storage threads blocked until their own timeout.
struct ReleaseOnDrop(Arc<Faulty>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

struct Guard<'a>(&'a Faulty);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Store for Faulty {
    fn apply(&self, key: &[u8], version: &Versioned) -> Result<bool, StoreError> {
        let _g = self.enter(key);
        self.inner.apply(key, version)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let _g = self.enter(key);
        self.inner.get(key)
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Key, Versioned)>, StoreError> {
        self.inner.range(start, end, limit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    // The node applies through `apply_replacing`: one stall point and one
    // count per write, as for `apply`.
    fn apply_replacing(&self, key: &[u8], version: &Versioned) -> Result<ApplyOutcome, StoreError> {
        let _g = self.enter(key);
        self.inner.apply_replacing(key, version)
    }

    fn set_purge_watermark(&self, micros: u64) {
        self.inner.set_purge_watermark(micros)
    }
}

async fn node(
    store: Arc<Faulty>,
    mode: StorageMode,
    limits: StorageLimits,
    timeout: Duration,
) -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("overload"),
    )
    .await
    .unwrap();
    NodeBuilder::new(1, "overload")
        .transport(Arc::new(transport))
        .store(store)
        .replication_factor(1)
        .default_consistency(Consistency::One)
        .storage_mode(mode)
        .storage_limits(limits)
        .request_timeout(timeout)
        .start()
        .await
        .unwrap()
}

async fn set(h: &NodeHandle, k: &str) -> Result<ClientResponse, RequestError> {
    tokio::time::timeout(
        WAIT,
        h.execute(ClientRequest::put(
            Bytes::copy_from_slice(k.as_bytes()),
            "v",
        )),
    )
    .await
    .expect("answered in time")
}

async fn get(h: &NodeHandle, k: &str) -> Result<ClientResponse, RequestError> {
    tokio::time::timeout(
        WAIT,
        h.execute(ClientRequest::get(Bytes::copy_from_slice(k.as_bytes()))),
    )
    .await
    .expect("answered in time")
}

const MODES: [StorageMode; 3] = [
    StorageMode::Inline,
    StorageMode::BlockingPerOp,
    StorageMode::Workers { threads: 2 },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_store_fails_that_operation_and_the_node_runs_on() {
    let _serial = SERIAL.lock().await;
    for mode in MODES {
        let store = Arc::new(Faulty::default());
        let n = node(
            store.clone(),
            mode,
            StorageLimits::default(),
            Duration::from_secs(2),
        )
        .await;
        let h = n.handle();
        for _ in 0..3 {
            match set(&h, "boom").await {
                Err(RequestError::Client(ClientError::ReplicaFailure { failed: 1, .. })) => {}
                other => panic!("{mode:?}: a panicking apply should fail the write, got {other:?}"),
            }
            assert!(
                matches!(
                    get(&h, "boom").await,
                    Err(RequestError::Client(ClientError::ReplicaFailure { .. }))
                ),
                "{mode:?}: a panicking get fails the read"
            );
            // Other keys are served as before, by the same node.
            assert!(
                matches!(set(&h, "fine").await, Ok(ClientResponse::Written { .. })),
                "{mode:?}"
            );
            match get(&h, "fine").await {
                Ok(ClientResponse::Value(Some(v))) => assert_eq!(&v[..], b"v"),
                other => panic!("{mode:?}: {other:?}"),
            }
        }
        n.shutdown(false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_bounds_in_flight_work_refuses_the_excess_and_recovers() {
    let _serial = SERIAL.lock().await;
    const CAP: usize = 4;
    let metrics = cassio_node::gateway::install_metrics().unwrap();
    for mode in [
        StorageMode::BlockingPerOp,
        StorageMode::Workers { threads: 2 },
    ] {
        let store = Arc::new(Faulty::default());
        let n = node(
            store.clone(),
            mode,
            StorageLimits {
                max_in_flight: CAP,
                max_in_flight_bytes: usize::MAX,
            },
            Duration::from_secs(10),
        )
        .await;
        let h = n.handle();
        assert!(set(&h, "warm").await.is_ok());
        store.stall();
        let _release = ReleaseOnDrop(store.clone());
        let mut tasks = Vec::new();
        for i in 0..40 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { set(&h, &format!("k{i}")).await }));
        }
        // While stalled: the excess is refused at once, not queued.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut overloaded = 0;
        let mut pending = Vec::new();
        for t in tasks {
            if t.is_finished() {
                match t.await.unwrap() {
                    Err(RequestError::Client(ClientError::Overloaded)) => overloaded += 1,
                    other => {
                        panic!("{mode:?}: only Overloaded answers while stalled, got {other:?}")
                    }
                }
            } else {
                pending.push(t);
            }
        }
        assert!(
            overloaded >= 40 - 2 * CAP,
            "{mode:?}: {overloaded} of 40 refused; at most {CAP} run and {CAP} wait"
        );
        assert!(
            pending.len() <= 2 * CAP,
            "{mode:?}: {} requests held while stalled",
            pending.len()
        );
        let text = metrics.render();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        };
        assert!(value("cassio_overloaded_total{source=\"client\"}") >= overloaded as f64);
        let depth = value("cassio_storage_queue_depth");
        assert!(
            (1.0..=CAP as f64).contains(&depth),
            "{mode:?}: queue depth {depth} while stalled ({overloaded} refused, {} held)",
            pending.len()
        );
        assert!(value("cassio_storage_in_flight") <= CAP as f64);
        let seen_while_stalled = store.max_running.load(Ordering::SeqCst);
        assert!(
            seen_while_stalled <= CAP,
            "{mode:?}: {seen_while_stalled} storage calls at once over a cap of {CAP}"
        );
        // Released: what waited completes, and new work is served.
        store.release();
        for t in pending {
            let r = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
            assert!(
                matches!(r, Ok(ClientResponse::Written { .. })),
                "{mode:?}: a request that waited completes: {r:?}"
            );
        }
        for i in 0..20 {
            assert!(
                matches!(
                    set(&h, &format!("after{i}")).await,
                    Ok(ClientResponse::Written { .. })
                ),
                "{mode:?}: recovered"
            );
        }
        assert!(store.max_running.load(Ordering::SeqCst) <= CAP);
        n.shutdown(false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_whose_deadline_passed_while_queued_never_reach_the_store() {
    let _serial = SERIAL.lock().await;
    for mode in [
        StorageMode::BlockingPerOp,
        StorageMode::Workers { threads: 1 },
    ] {
        let store = Arc::new(Faulty::default());
        let n = node(
            store.clone(),
            mode,
            StorageLimits {
                max_in_flight: 1,
                max_in_flight_bytes: usize::MAX,
            },
            Duration::from_millis(300),
        )
        .await;
        let h = n.handle();
        store.stall();
        let _release = ReleaseOnDrop(store.clone());
        let first = {
            let h = h.clone();
            tokio::spawn(async move { set(&h, "first").await })
        };
        // Wait until the first write is inside the store, so the second
        // one queues behind it.
        let deadline = tokio::time::Instant::now() + WAIT;
        while store.running.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = set(&h, "second").await;
        assert!(
            matches!(
                second,
                Err(RequestError::Client(ClientError::Timeout { .. }))
            ),
            "{mode:?}: {second:?}"
        );
        // Past the deadline, then released: the queued write is dropped.
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.release();
        let first = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
        assert!(
            matches!(
                first,
                Err(RequestError::Client(ClientError::Timeout { .. }))
            ),
            "{mode:?}: {first:?}"
        );
        assert!(set(&h, "third").await.is_ok(), "{mode:?}");
        assert!(store.saw(b"first") && store.saw(b"third"));
        assert!(
            !store.saw(b"second"),
            "{mode:?}: an operation past its deadline reached the store"
        );
        n.shutdown(false).await.unwrap();
    }
}

async fn peer(
    id: u64,
    store: Arc<dyn Store>,
    seeds: Vec<std::net::SocketAddr>,
    limits: StorageLimits,
) -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("overload-peers"),
    )
    .await
    .unwrap();
    NodeBuilder::new(id, "overload-peers")
        .transport(Arc::new(transport))
        .store(store)
        .seeds(seeds)
        .replication_factor(2)
        .default_consistency(Consistency::One)
        .gossip_interval(Duration::from_millis(100))
        .storage_mode(StorageMode::BlockingPerOp)
        .storage_limits(limits)
        .start()
        .await
        .unwrap()
}

/// Waits until `h` coordinates a request at ALL (both replicas up and
/// settled).
async fn wait_all(h: &NodeHandle, key: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let req = ClientRequest::put(Bytes::copy_from_slice(key.as_bytes()), "v")
            .with_consistency(Consistency::All);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), h.execute(req)).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write at ALL succeeded through {key}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_stalled_store_stops_taking_peer_writes_and_catches_up() {
    let _serial = SERIAL.lock().await;
    const CAP: usize = 2;
    let limits = StorageLimits {
        max_in_flight: CAP,
        max_in_flight_bytes: usize::MAX,
    };
    let a = peer(1, Arc::new(MemStore::new()), Vec::new(), limits).await;
    let slow = Arc::new(Faulty::default());
    let b = peer(2, slow.clone(), vec![a.local_addr()], limits).await;
    let (ha, hb) = (a.handle(), b.handle());
    wait_all(&ha, "ready-a").await;
    wait_all(&hb, "ready-b").await;
    slow.stall();
    let _release = ReleaseOnDrop(slow.clone());
    // Writes at ONE through A: A's own copy acknowledges them, whatever B
    // does; B receives a replica write for each one.
    let mut acked = 0;
    for i in 0..200 {
        let req = ClientRequest::put(Bytes::from(format!("p{i}")), "v");
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), ha.execute(req)).await {
            acked += 1;
        }
    }
    assert!(acked >= 190, "A kept serving at ONE: {acked} of 200");
    // B ran at most CAP storage calls at once, however many frames came.
    assert!(
        slow.max_running.load(Ordering::SeqCst) <= CAP,
        "{} storage calls at once on B",
        slow.max_running.load(Ordering::SeqCst)
    );
    // B refuses its own clients while saturated.
    let r = hb
        .execute(ClientRequest::get(Bytes::from_static(b"p0")))
        .await;
    assert!(
        matches!(r, Err(RequestError::Client(ClientError::Overloaded))),
        "{r:?}"
    );
    slow.release();
    // B catches up and the pair serves writes at ALL again, through either.
    wait_all(&ha, "after-a").await;
    wait_all(&hb, "after-b").await;
    assert!(slow.max_running.load(Ordering::SeqCst) <= CAP);
    b.shutdown(false).await.unwrap();
    a.shutdown(false).await.unwrap();
}
