//! The transport conformance suite: every sentence of the
//! [`Transport`](cassio_core::Transport) contract, as tests any transport
//! gets by implementing [`TransportHarness`] and invoking one macro:
//!
//! ```ignore
//! struct MyHarness { /* e.g. a temp dir with certificates */ }
//! #[async_trait::async_trait]
//! impl conformance::transport::TransportHarness for MyHarness { /* ... */ }
//!
//! conformance::transport_tests!(MyHarness);
//! // and, for a transport that authenticates peers with TLS:
//! conformance::tls_transport_tests!(MyHarness);
//! ```
//!
//! Both macros also take a module name first
//! (`transport_tests!(plain, PlainHarness)`) so one test file can run the
//! suite for several configurations. Each case is a plain `#[test]` that
//! builds its own two-thread tokio runtime and fails if the case takes longer
//! than [`CASE_TIMEOUT`]; every wait inside is bounded too.
//!
//! Sockets are bound on `127.0.0.1` with OS-assigned ports. The harness should
//! configure short timeouts (a connect timeout of at most 2 s, a maximum
//! backoff of at most 1 s) so the reconnect cases finish quickly.

use bytes::Bytes;
use cassio_core::{InboundFrame, NodeId, Transport, TransportError};
use core::net::SocketAddr;
use std::future::Future;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// The longest any single case may run.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest a case waits for one expected event.
pub const WAIT: Duration = Duration::from_secs(15);

/// How to bind one transport for a case.
#[derive(Clone, Debug)]
pub struct BindOptions {
    /// Where to listen; port 0 lets the OS choose.
    pub addr: SocketAddr,
    /// The cluster name announced in the handshake.
    pub cluster: String,
    /// The largest frame this transport sends or accepts.
    pub max_frame: usize,
    /// The most destination peers it tracks; `None` keeps the transport's
    /// default.
    pub max_peers: Option<usize>,
}

impl BindOptions {
    /// `127.0.0.1:0` in `cluster`, with the default 16 MiB cap.
    pub fn new(cluster: &str) -> Self {
        BindOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster: cluster.to_owned(),
            max_frame: cassio_core::wire::DEFAULT_MAX_FRAME,
            max_peers: None,
        }
    }

    /// The same options at a fixed address (for restarts).
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The same options with another frame cap.
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// The same options with a cap on tracked peers.
    pub fn max_peers(mut self, max: usize) -> Self {
        self.max_peers = Some(max);
        self
    }
}

/// Inbound connection counters a transport exposes to the suite, so cases
/// can check that the receiving side refused or closed a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Connections that completed TLS and the handshake.
    pub accepted: u64,
    /// Connections refused at TLS or the handshake (garbage, wrong
    /// cluster, missing or foreign certificate).
    pub refused: u64,
    /// Connections closed because of an oversize or malformed frame.
    pub bad_frames: u64,
}

/// What the suite needs from a transport implementation.
#[async_trait::async_trait]
pub trait TransportHarness: Send + Sync + Sized + 'static {
    /// The transport under test.
    type Transport: Transport;

    /// Whether [`TransportHarness::bind`] gives transports that
    /// authenticate peers, so that every received frame names its sender's
    /// node id (`InboundFrame::peer_id` is `Some`); otherwise it is `None`.
    const AUTHENTICATES_PEERS: bool;

    /// A fresh harness for one case (e.g. with its own certificates).
    async fn setup() -> Self;

    /// Binds a transport; certificates, if any, come from the harness.
    async fn bind(&self, opts: BindOptions) -> Result<Self::Transport, TransportError>;

    /// Opens a raw connection to `target`, writes bytes no peer would send,
    /// and reports whether `target` closed that connection within a few
    /// seconds.
    async fn inject_garbage(&self, target: SocketAddr) -> bool;

    /// The transport's inbound counters.
    fn stats(transport: &Self::Transport) -> InboundStats;

    /// How many destination peers the transport tracks now.
    fn peer_count(transport: &Self::Transport) -> usize;
}

/// Extra cases for transports that authenticate peers with mutual TLS.
#[async_trait::async_trait]
pub trait TlsTransportHarness: TransportHarness {
    /// Binds a transport that dials peers without presenting a certificate.
    async fn bind_without_cert(&self, opts: BindOptions)
        -> Result<Self::Transport, TransportError>;

    /// Binds a transport whose certificate (and trusted CA) come from a
    /// different CA than the one [`TransportHarness::bind`] uses.
    async fn bind_with_foreign_ca(
        &self,
        opts: BindOptions,
    ) -> Result<Self::Transport, TransportError>;

    /// Binds a transport whose certificate, from the right CA, names node
    /// `id`.
    async fn bind_as(
        &self,
        opts: BindOptions,
        id: NodeId,
    ) -> Result<Self::Transport, TransportError>;

    /// Binds a transport whose certificate, from the right CA, names no
    /// node id.
    async fn bind_without_node_id(
        &self,
        opts: BindOptions,
    ) -> Result<Self::Transport, TransportError>;
}

/// Runs one case on a fresh two-thread runtime, failing it after
/// [`CASE_TIMEOUT`].
pub fn run<F: Future<Output = ()>>(case: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if timeout(CASE_TIMEOUT, case).await.is_err() {
            panic!("transport case did not finish within {CASE_TIMEOUT:?}");
        }
    });
}

/// Expands to one `#[test]` per transport case for a [`TransportHarness`].
#[macro_export]
macro_rules! transport_tests {
    ($module:ident, $harness:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::transport_tests!($harness);
        }
    };
    ($harness:ty) => {
        $crate::__transport_cases!($harness;
            delivery_both_ways,
            ten_thousand_small_frames_arrive_in_order,
            batches_keep_order_boundaries_and_limits,
            eight_mib_frame_arrives_whole,
            frames_of_every_size_arrive_whole,
            oversize_frame_is_refused_by_sender,
            oversize_frame_closes_only_that_connection,
            garbage_closes_only_that_connection,
            unreachable_peer_errors_in_bounded_time,
            dead_peer_errors_in_bounded_time,
            reconnects_after_peer_restarts_on_same_address,
            eight_concurrent_senders_share_one_peer,
            eight_peers_send_to_one,
            wrong_cluster_is_refused_on_both_sides,
            close_wakes_recv_and_refuses_send,
            forget_drops_the_peer_and_a_later_send_reconnects,
            peer_cap_holds_under_many_distinct_peers,
        );
    };
}

/// Expands to one `#[test]` per TLS case for a [`TlsTransportHarness`].
#[macro_export]
macro_rules! tls_transport_tests {
    ($module:ident, $harness:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::tls_transport_tests!($harness);
        }
    };
    ($harness:ty) => {
        $crate::__transport_cases!($harness;
            peer_without_certificate_is_refused,
            peer_from_another_ca_is_refused,
            frames_carry_the_node_id_of_the_senders_certificate,
            certificate_without_node_id_is_refused_on_both_sides,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __transport_cases {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::transport::run($crate::transport::cases::$case::<$harness>());
            }
        )*
    };
}

/// Waits for the next frame, failing the case after [`WAIT`].
pub async fn recv_within<T: Transport>(t: &T, what: &str) -> InboundFrame {
    match timeout(WAIT, t.recv()).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => panic!("{what}: recv failed: {e}"),
        Err(_) => panic!("{what}: nothing arrived within {WAIT:?}"),
    }
}

/// Asserts that no frame arrives for `quiet`.
pub async fn assert_nothing_arrives<T: Transport>(t: &T, quiet: Duration, what: &str) {
    if let Ok(r) = timeout(quiet, t.recv()).await {
        panic!("{what}: expected nothing, got {r:?}");
    }
}

/// Sends, retrying while the queue is full (the documented back-pressure);
/// any other error fails the case.
pub async fn send_ok<T: Transport>(t: &T, to: SocketAddr, frame: Bytes) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = timeout(WAIT, t.send(to, frame.clone()))
            .await
            .unwrap_or_else(|_| panic!("send to {to} hung for {WAIT:?}"));
        match r {
            Ok(()) => return,
            Err(TransportError::QueueFull { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("send to {to} failed: {e}"),
        }
    }
}

/// Sends `frame` every 50 ms (ignoring errors) until `rx` receives a frame
/// equal to it, for up to [`WAIT`].
pub async fn send_until_received<T: Transport>(tx: &T, rx: &T, frame: Bytes, what: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let _ = timeout(WAIT, tx.send(rx.local_addr(), frame.clone()))
            .await
            .unwrap_or_else(|_| panic!("{what}: send hung"));
        if let Ok(Ok(got)) = timeout(Duration::from_millis(50), rx.recv()).await {
            if got.payload == frame {
                return;
            }
        }
    }
    panic!("{what}: frame never arrived within {WAIT:?}");
}

/// Polls `stats` until `pred` holds, for up to [`WAIT`].
pub async fn wait_for_stats<H: TransportHarness>(
    t: &H::Transport,
    what: &str,
    pred: impl Fn(InboundStats) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = H::stats(t);
        if pred(s) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: counters never matched, last {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Binds, retrying for a while: a just-closed transport's port can take a
/// moment to be released.
pub async fn bind_retrying<H: TransportHarness>(h: &H, opts: BindOptions) -> H::Transport {
    let deadline = Instant::now() + WAIT;
    loop {
        match h.bind(opts.clone()).await {
            Ok(t) => return t,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {}: {e}", opts.addr),
        }
    }
}

async fn bind<H: TransportHarness>(h: &H, opts: BindOptions) -> H::Transport {
    h.bind(opts).await.expect("bind")
}

/// An address nothing listens on (bound, then released).
async fn dead_address<H: TransportHarness>(h: &H) -> SocketAddr {
    let t = bind(h, BindOptions::new(CLUSTER)).await;
    let addr = t.local_addr();
    t.close().await;
    drop(t);
    addr
}

/// Asserts that `fut` (a send) returns an error within [`WAIT`].
async fn expect_send_error(
    fut: impl Future<Output = Result<(), TransportError>>,
    what: &str,
) -> TransportError {
    match timeout(WAIT, fut).await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("{what}: send succeeded, expected an error"),
        Err(_) => panic!("{what}: send hung for {WAIT:?}"),
    }
}

/// A deterministic payload of `len` bytes that starts with `tag`.
fn payload(tag: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len.max(4));
    v.extend_from_slice(&tag.to_be_bytes());
    let mut x = tag.wrapping_mul(2_654_435_761).wrapping_add(1);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.truncate(len.max(4));
    Bytes::from(v)
}

fn tag_of(frame: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&frame[..4]);
    u32::from_be_bytes(b)
}

const CLUSTER: &str = "conformance";

/// The cases; each is generic over the harness.
pub mod cases {
    use super::*;

    /// A frame goes each way and arrives intact, from a loopback address.
    pub async fn delivery_both_ways<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        send_ok(&a, b.local_addr(), Bytes::from_static(b"ping")).await;
        let got = recv_within(&b, "a -> b").await;
        assert_eq!(got.payload, Bytes::from_static(b"ping"));
        assert!(got.from.ip().is_loopback(), "from = {}", got.from);
        assert_eq!(got.peer_id.is_some(), H::AUTHENTICATES_PEERS, "{got:?}");
        send_ok(&b, a.local_addr(), Bytes::from_static(b"pong")).await;
        let got = recv_within(&a, "b -> a").await;
        assert_eq!(got.payload, Bytes::from_static(b"pong"));
        assert!(got.from.ip().is_loopback(), "from = {}", got.from);
        assert_eq!(got.peer_id.is_some(), H::AUTHENTICATES_PEERS, "{got:?}");
        a.close().await;
        b.close().await;
    }

    /// 10,000 small frames to one peer arrive complete and in send order.
    pub async fn ten_thousand_small_frames_arrive_in_order<H: TransportHarness>() {
        const N: u32 = 10_000;
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let to = b.local_addr();
        let sender = async {
            for i in 0..N {
                send_ok(&a, to, payload(i, 16 + (i as usize % 85))).await;
            }
        };
        let receiver = async {
            for i in 0..N {
                let got = recv_within(&b, "small frames").await;
                assert_eq!(got.payload, payload(i, 16 + (i as usize % 85)), "frame {i}");
            }
        };
        tokio::join!(sender, receiver);
        assert_nothing_arrives(&b, Duration::from_millis(100), "after 10k").await;
        a.close().await;
        b.close().await;
    }

    /// Frames queued with `send_many` arrive whole and in order; `recv_many`
    /// hands them over in batches that are never empty nor larger than
    /// asked, and a frame too large in the middle of a batch fails alone
    /// (the error says how many were queued and gives back the rest).
    pub async fn batches_keep_order_boundaries_and_limits<H: TransportHarness>() {
        const N: u32 = 5_000;
        const MAX: usize = 7;
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER).max_frame(64 * 1024)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let to = b.local_addr();
        // Connected first, so the batches below go out on a live connection.
        send_until_received(&a, &b, payload(u32::MAX, 8), "warm-up").await;
        let sender = async {
            let mut i = 0;
            while i < N {
                let batch: Vec<Bytes> = (i..(i + 50).min(N))
                    .map(|j| payload(j, 16 + (j as usize % 85)))
                    .collect();
                let len = batch.len() as u32;
                let deadline = Instant::now() + WAIT;
                let mut batch = batch;
                loop {
                    match timeout(WAIT, a.send_many(to, batch)).await {
                        Ok(Ok(())) => break,
                        // The documented back-pressure: what was not queued
                        // comes back, the failing frame first.
                        Ok(Err(e))
                            if matches!(e.error, TransportError::QueueFull { .. })
                                && Instant::now() < deadline =>
                        {
                            batch = e.unsent;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Ok(Err(e)) => panic!("send_many of frames {i}..: {e}"),
                        Err(_) => panic!("send_many of frames {i}.. hung for {WAIT:?}"),
                    }
                }
                i += len;
            }
        };
        let receiver = async {
            let mut next = 0u32;
            let mut batches = 0;
            while next < N {
                let mut got = Vec::new();
                let n = match timeout(WAIT, b.recv_many(&mut got, MAX)).await {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => panic!("recv_many after frame {next}: {e}"),
                    Err(_) => panic!("recv_many after frame {next} waited {WAIT:?}"),
                };
                assert_eq!(n, got.len(), "the count returned is what was appended");
                assert!((1..=MAX).contains(&n), "batch of {n} frames (max {MAX})");
                for f in got {
                    if f.payload.len() == 8 && tag_of(&f.payload) == u32::MAX {
                        continue; // a late copy of the warm-up frame
                    }
                    assert_eq!(
                        f.payload,
                        payload(next, 16 + (next as usize % 85)),
                        "frame {next}"
                    );
                    next += 1;
                }
                batches += 1;
            }
            batches
        };
        let ((), batches) = tokio::join!(sender, receiver);
        assert!(batches >= (N as usize).div_ceil(MAX), "{batches} batches");
        assert_nothing_arrives(&b, Duration::from_millis(100), "after the batches").await;

        // A frame over the cap in the middle of a batch.
        let batch = vec![
            payload(1, 10),
            Bytes::from(vec![0u8; 64 * 1024 + 1]),
            payload(3, 10),
        ];
        let err = match timeout(WAIT, a.send_many(to, batch)).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => panic!("a batch holding an oversize frame was queued whole"),
            Err(_) => panic!("send_many hung for {WAIT:?}"),
        };
        assert!(
            matches!(err.error, TransportError::FrameTooLarge { .. }),
            "{err}"
        );
        assert_eq!(err.queued, 1, "{err}");
        assert_eq!(
            err.unsent.len(),
            2,
            "the oversize frame and the one after it: {err}"
        );
        assert_eq!(err.unsent[1], payload(3, 10), "{err}");
        let got = recv_within(&b, "the frame before the oversize one").await;
        assert_eq!(got.payload, payload(1, 10));
        assert_nothing_arrives(&b, Duration::from_millis(100), "after the oversize batch").await;
        a.close().await;
        b.close().await;
    }

    /// One 8 MiB frame arrives byte for byte.
    pub async fn eight_mib_frame_arrives_whole<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let big = payload(8, 8 * 1024 * 1024);
        send_ok(&a, b.local_addr(), big.clone()).await;
        let got = recv_within(&b, "8 MiB").await;
        assert_eq!(got.payload.len(), big.len());
        assert!(got.payload == big, "8 MiB frame corrupted");
        a.close().await;
        b.close().await;
    }

    /// Frames of many sizes (empty, around buffer and stream boundaries, up
    /// to 1 MiB) each arrive exactly once, whole and unmerged.
    pub async fn frames_of_every_size_arrive_whole<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let sizes = [
            4usize,
            5,
            100,
            1400,
            4096,
            16_383,
            16_384,
            16_385,
            65_535,
            65_536,
            65_537,
            100_000,
            262_144,
            1 << 20,
        ];
        send_ok(&a, b.local_addr(), Bytes::new()).await;
        for (i, &len) in sizes.iter().enumerate() {
            send_ok(&a, b.local_addr(), payload(i as u32, len)).await;
        }
        let mut seen = vec![false; sizes.len()];
        let mut empty = 0;
        for _ in 0..=sizes.len() {
            let got = recv_within(&b, "varied sizes").await.payload;
            if got.is_empty() {
                empty += 1;
                continue;
            }
            let i = tag_of(&got) as usize;
            assert!(
                i < sizes.len() && !seen[i],
                "unexpected or duplicate frame {i}"
            );
            assert_eq!(got, payload(i as u32, sizes[i]), "frame {i} damaged");
            seen[i] = true;
        }
        assert_eq!(empty, 1, "the empty frame arrives exactly once");
        assert_nothing_arrives(&b, Duration::from_millis(100), "after sizes").await;
        a.close().await;
        b.close().await;
    }

    /// A frame over the sender's cap is refused with `FrameTooLarge` and
    /// not sent; the next frame still goes through.
    pub async fn oversize_frame_is_refused_by_sender<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER).max_frame(1 << 20)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let err = expect_send_error(
            a.send(b.local_addr(), payload(1, (1 << 20) + 1)),
            "oversize send",
        )
        .await;
        assert!(
            matches!(err, TransportError::FrameTooLarge { len, max } if len == (1 << 20) + 1 && max == 1 << 20),
            "{err:?}"
        );
        send_ok(&a, b.local_addr(), payload(2, 1 << 20)).await;
        let got = recv_within(&b, "frame at the cap").await;
        assert_eq!(got.payload, payload(2, 1 << 20));
        a.close().await;
        b.close().await;
    }

    /// A frame over the receiver's cap closes that connection only: the
    /// receiver keeps serving other peers, and the sender reconnects.
    pub async fn oversize_frame_closes_only_that_connection<H: TransportHarness>() {
        let h = H::setup().await;
        let small_cap = 1 << 20;
        let b = bind(&h, BindOptions::new(CLUSTER).max_frame(small_cap)).await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let c = bind(&h, BindOptions::new(CLUSTER).max_frame(small_cap)).await;
        send_ok(&c, b.local_addr(), Bytes::from_static(b"from c, before")).await;
        assert_eq!(
            recv_within(&b, "c before").await.payload,
            &b"from c, before"[..]
        );

        send_ok(&a, b.local_addr(), payload(7, 2 * small_cap)).await;
        wait_for_stats::<H>(&b, "oversize frame noticed", |s| s.bad_frames >= 1).await;
        assert_nothing_arrives(&b, Duration::from_millis(200), "oversize frame").await;

        send_ok(&c, b.local_addr(), Bytes::from_static(b"from c, after")).await;
        assert_eq!(
            recv_within(&b, "c after").await.payload,
            &b"from c, after"[..]
        );
        send_until_received(&a, &b, Bytes::from_static(b"a again"), "a reconnects").await;
        for t in [&a, &b, &c] {
            t.close().await;
        }
    }

    /// Garbage from a raw socket closes that connection; established peers
    /// are unaffected.
    pub async fn garbage_closes_only_that_connection<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        send_ok(&a, b.local_addr(), Bytes::from_static(b"before")).await;
        assert_eq!(
            recv_within(&b, "before garbage").await.payload,
            &b"before"[..]
        );
        let before = H::stats(&b);

        let closed = timeout(WAIT, h.inject_garbage(b.local_addr()))
            .await
            .expect("inject_garbage hung");
        assert!(closed, "the transport kept a garbage connection open");
        wait_for_stats::<H>(&b, "garbage refused", |s| {
            s.refused + s.bad_frames > before.refused + before.bad_frames
        })
        .await;

        send_ok(&a, b.local_addr(), Bytes::from_static(b"after")).await;
        assert_eq!(
            recv_within(&b, "after garbage").await.payload,
            &b"after"[..]
        );
        assert_eq!(
            H::stats(&b).accepted,
            before.accepted,
            "a's connection was kept"
        );
        a.close().await;
        b.close().await;
    }

    /// Sending to an address where nothing listens fails within a bounded
    /// time, and keeps failing fast while the peer stays down.
    pub async fn unreachable_peer_errors_in_bounded_time<H: TransportHarness>() {
        let h = H::setup().await;
        let dead = dead_address(&h).await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let err = expect_send_error(a.send(dead, Bytes::from_static(b"x")), "first send").await;
        assert!(
            matches!(err, TransportError::Unreachable { addr, .. } if addr == dead),
            "{err:?}"
        );
        let err = expect_send_error(a.send(dead, Bytes::from_static(b"x")), "second send").await;
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
        a.close().await;
    }

    /// A peer that was reachable and then stops makes sends fail within a
    /// bounded time; no send hangs.
    pub async fn dead_peer_errors_in_bounded_time<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let to = b.local_addr();
        send_ok(&a, to, Bytes::from_static(b"hello")).await;
        recv_within(&b, "before death").await;
        b.close().await;
        drop(b);
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout(WAIT, a.send(to, Bytes::from_static(b"anyone?"))).await {
                Err(_) => panic!("send to a dead peer hung"),
                Ok(Err(TransportError::Unreachable { addr, .. })) => {
                    assert_eq!(addr, to);
                    break;
                }
                Ok(Err(e)) => panic!("unexpected error {e:?}"),
                Ok(Ok(())) => {
                    assert!(Instant::now() < deadline, "sends kept succeeding");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        a.close().await;
    }

    /// After a peer restarts on the same address, frames reach it again.
    pub async fn reconnects_after_peer_restarts_on_same_address<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let addr = b.local_addr();
        send_ok(&a, addr, Bytes::from_static(b"first life")).await;
        assert_eq!(
            recv_within(&b, "first life").await.payload,
            &b"first life"[..]
        );
        b.close().await;
        drop(b);
        // Let the sender notice, so the restart really needs a reconnect.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b2 = bind_retrying(&h, BindOptions::new(CLUSTER).at(addr)).await;
        assert_eq!(b2.local_addr(), addr);
        send_until_received(&a, &b2, Bytes::from_static(b"second life"), "restart").await;
        a.close().await;
        b2.close().await;
    }

    /// Eight tasks sending through one transport to one peer: every frame
    /// arrives, and each task's frames keep their order.
    pub async fn eight_concurrent_senders_share_one_peer<H: TransportHarness>() {
        const TASKS: u32 = 8;
        const PER: u32 = 500;
        let h = H::setup().await;
        let a = std::sync::Arc::new(bind(&h, BindOptions::new(CLUSTER)).await);
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let to = b.local_addr();
        let mut senders = Vec::new();
        for task in 0..TASKS {
            let a = a.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..PER {
                    send_ok(&*a, to, payload((task << 16) | i, 64)).await;
                }
            }));
        }
        let mut next = vec![0u32; TASKS as usize];
        for _ in 0..TASKS * PER {
            let got = recv_within(&b, "concurrent senders").await.payload;
            let tag = tag_of(&got);
            let (task, i) = ((tag >> 16) as usize, tag & 0xffff);
            assert!(task < TASKS as usize, "bad tag {tag:#x}");
            assert_eq!(i, next[task], "task {task} out of order");
            assert_eq!(got, payload(tag, 64));
            next[task] += 1;
        }
        for s in senders {
            timeout(WAIT, s)
                .await
                .expect("sender hung")
                .expect("sender panicked");
        }
        assert!(next.iter().all(|&n| n == PER));
        a.close().await;
        b.close().await;
    }

    /// Eight transports send to one peer at once; all frames arrive and
    /// each sender's order is kept.
    pub async fn eight_peers_send_to_one<H: TransportHarness>() {
        const PEERS: u32 = 8;
        const PER: u32 = 300;
        let h = H::setup().await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let to = b.local_addr();
        let mut senders = Vec::new();
        for p in 0..PEERS {
            let t = bind(&h, BindOptions::new(CLUSTER)).await;
            senders.push(tokio::spawn(async move {
                for i in 0..PER {
                    send_ok(&t, to, payload((p << 16) | i, 100)).await;
                }
                t
            }));
        }
        let mut next = vec![0u32; PEERS as usize];
        for _ in 0..PEERS * PER {
            let got = recv_within(&b, "eight peers").await.payload;
            let tag = tag_of(&got);
            let (p, i) = ((tag >> 16) as usize, tag & 0xffff);
            assert!(p < PEERS as usize, "bad tag {tag:#x}");
            assert_eq!(i, next[p], "peer {p} out of order");
            next[p] += 1;
        }
        for s in senders {
            let t = timeout(WAIT, s)
                .await
                .expect("sender hung")
                .expect("sender panicked");
            t.close().await;
        }
        b.close().await;
    }

    /// A peer from another cluster is refused at the handshake: the dialler
    /// gets `Handshake`, the listener counts a refusal, nothing is
    /// delivered, and the listener keeps serving its own cluster.
    pub async fn wrong_cluster_is_refused_on_both_sides<H: TransportHarness>() {
        let h = H::setup().await;
        let b = bind(&h, BindOptions::new("beta")).await;
        let a = bind(&h, BindOptions::new("alpha")).await;
        let err = expect_send_error(
            a.send(b.local_addr(), Bytes::from_static(b"intruder")),
            "cross-cluster send",
        )
        .await;
        assert!(
            matches!(&err, TransportError::Handshake { addr, .. } if *addr == b.local_addr()),
            "{err:?}"
        );
        wait_for_stats::<H>(&b, "refusal counted", |s| s.refused >= 1).await;
        assert_nothing_arrives(&b, Duration::from_millis(200), "cross-cluster").await;
        // The other direction is refused too.
        let err = expect_send_error(
            b.send(a.local_addr(), Bytes::from_static(b"intruder")),
            "reverse cross-cluster send",
        )
        .await;
        assert!(matches!(err, TransportError::Handshake { .. }), "{err:?}");
        let c = bind(&h, BindOptions::new("beta")).await;
        send_ok(&c, b.local_addr(), Bytes::from_static(b"member")).await;
        assert_eq!(
            recv_within(&b, "same cluster").await.payload,
            &b"member"[..]
        );
        for t in [&a, &b, &c] {
            t.close().await;
        }
    }

    /// `close` wakes a pending `recv` with `Closed`; later calls fail with
    /// `Closed` too.
    pub async fn close_wakes_recv_and_refuses_send<H: TransportHarness>() {
        let h = H::setup().await;
        let a = std::sync::Arc::new(bind(&h, BindOptions::new(CLUSTER)).await);
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.recv().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        a.close().await;
        let r = timeout(WAIT, waiter)
            .await
            .expect("recv not woken by close")
            .expect("recv task panicked");
        assert!(matches!(r, Err(TransportError::Closed)), "{r:?}");
        let r = timeout(WAIT, a.send(b.local_addr(), Bytes::from_static(b"x")))
            .await
            .expect("send after close hung");
        assert!(matches!(r, Err(TransportError::Closed)), "{r:?}");
        let r = timeout(WAIT, a.recv())
            .await
            .expect("recv after close hung");
        assert!(matches!(r, Err(TransportError::Closed)), "{r:?}");
        b.close().await;
    }

    /// `forget` drops the peer's connection: the next send opens a new
    /// one (the receiver counts a second accepted connection) and arrives.
    pub async fn forget_drops_the_peer_and_a_later_send_reconnects<H: TransportHarness>() {
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        send_ok(&a, b.local_addr(), Bytes::from_static(b"before")).await;
        assert_eq!(recv_within(&b, "before").await.payload, &b"before"[..]);
        assert_eq!(H::peer_count(&a), 1);
        assert_eq!(H::stats(&b).accepted, 1);
        a.forget(b.local_addr());
        assert_eq!(H::peer_count(&a), 0, "forgotten peer still tracked");
        // Forgetting an unknown peer is harmless.
        a.forget(b.local_addr());
        send_ok(&a, b.local_addr(), Bytes::from_static(b"after")).await;
        assert_eq!(recv_within(&b, "after").await.payload, &b"after"[..]);
        wait_for_stats::<H>(&b, "a new connection after forget", |s| s.accepted == 2).await;
        for t in [&a, &b] {
            t.close().await;
        }
    }

    /// A sender capped at 2 peers talks to 6 in turn: every frame
    /// arrives, the number of tracked peers never exceeds the cap, and an
    /// evicted peer is reached again on demand.
    pub async fn peer_cap_holds_under_many_distinct_peers<H: TransportHarness>() {
        const CAP: usize = 2;
        let h = H::setup().await;
        let a = bind(&h, BindOptions::new(CLUSTER).max_peers(CAP)).await;
        let mut receivers = Vec::new();
        for _ in 0..6 {
            receivers.push(bind(&h, BindOptions::new(CLUSTER)).await);
        }
        for round in 0..2u32 {
            for (i, r) in receivers.iter().enumerate() {
                let frame = payload(round * 100 + i as u32, 32);
                send_ok(&a, r.local_addr(), frame.clone()).await;
                assert_eq!(recv_within(r, "capped sender").await.payload, frame);
                assert!(
                    H::peer_count(&a) <= CAP,
                    "{} peers tracked, cap {CAP}",
                    H::peer_count(&a)
                );
            }
        }
        // Every receiver was evicted once and reached again afterwards.
        for r in &receivers {
            assert_eq!(H::stats(r).accepted, 2);
        }
        a.close().await;
        for r in &receivers {
            r.close().await;
        }
    }

    fn refused(e: &TransportError) -> bool {
        matches!(
            e,
            TransportError::Tls(_)
                | TransportError::Unreachable { .. }
                | TransportError::Handshake { .. }
        )
    }

    /// A peer that presents no certificate is refused; the listener keeps
    /// serving authenticated peers.
    pub async fn peer_without_certificate_is_refused<H: TlsTransportHarness>() {
        let h = H::setup().await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let anon = h
            .bind_without_cert(BindOptions::new(CLUSTER))
            .await
            .expect("bind without cert");
        let err = expect_send_error(
            anon.send(b.local_addr(), Bytes::from_static(b"let me in")),
            "send without certificate",
        )
        .await;
        assert!(refused(&err), "{err:?}");
        wait_for_stats::<H>(&b, "no-cert refusal counted", |s| s.refused >= 1).await;
        assert_nothing_arrives(&b, Duration::from_millis(200), "no cert").await;
        assert_eq!(H::stats(&b).accepted, 0);
        let a = bind(&h, BindOptions::new(CLUSTER)).await;
        send_ok(&a, b.local_addr(), Bytes::from_static(b"member")).await;
        assert_eq!(recv_within(&b, "member").await.payload, &b"member"[..]);
        for t in [&a, &b, &anon] {
            t.close().await;
        }
    }

    /// A peer whose certificate comes from another CA is refused in both
    /// directions: we do not accept it, and we do not talk to it.
    pub async fn peer_from_another_ca_is_refused<H: TlsTransportHarness>() {
        let h = H::setup().await;
        let b = bind(&h, BindOptions::new(CLUSTER)).await;
        let foreign = h
            .bind_with_foreign_ca(BindOptions::new(CLUSTER))
            .await
            .expect("bind with foreign CA");
        let err = expect_send_error(
            foreign.send(b.local_addr(), Bytes::from_static(b"let me in")),
            "send from foreign CA",
        )
        .await;
        assert!(refused(&err), "{err:?}");
        wait_for_stats::<H>(&b, "foreign refusal counted", |s| s.refused >= 1).await;
        assert_nothing_arrives(&b, Duration::from_millis(200), "foreign").await;

        let err = expect_send_error(
            b.send(foreign.local_addr(), Bytes::from_static(b"secret")),
            "send to foreign CA",
        )
        .await;
        assert!(refused(&err), "{err:?}");
        assert_nothing_arrives(&foreign, Duration::from_millis(200), "to foreign").await;
        assert_eq!(H::stats(&foreign).accepted, 0);
        assert_eq!(H::stats(&b).accepted, 0);
        for t in [&b, &foreign] {
            t.close().await;
        }
    }

    /// Every frame carries the node id its sender's certificate names, in
    /// both directions, whatever the frame itself says.
    pub async fn frames_carry_the_node_id_of_the_senders_certificate<H: TlsTransportHarness>() {
        let h = H::setup().await;
        let a = h
            .bind_as(BindOptions::new(CLUSTER), NodeId(7))
            .await
            .expect("bind as 7");
        let b = h
            .bind_as(BindOptions::new(CLUSTER), NodeId(9))
            .await
            .expect("bind as 9");
        // The payload claims to be from node 9: the transport does not care.
        send_ok(&a, b.local_addr(), Bytes::from_static(b"I am node 9")).await;
        let got = recv_within(&b, "a -> b").await;
        assert_eq!(got.payload, &b"I am node 9"[..]);
        assert_eq!(got.peer_id, Some(NodeId(7)));
        send_ok(&b, a.local_addr(), Bytes::from_static(b"pong")).await;
        let got = recv_within(&a, "b -> a").await;
        assert_eq!(got.peer_id, Some(NodeId(9)));
        // Many frames on one connection all carry it.
        for i in 0..100 {
            send_ok(&a, b.local_addr(), payload(i, 16)).await;
        }
        for _ in 0..100 {
            assert_eq!(recv_within(&b, "batch").await.peer_id, Some(NodeId(7)));
        }
        for t in [&a, &b] {
            t.close().await;
        }
    }

    /// A certificate from the cluster CA that names no node id is refused
    /// as a client and as a server; members keep talking.
    pub async fn certificate_without_node_id_is_refused_on_both_sides<H: TlsTransportHarness>() {
        let h = H::setup().await;
        let b = h
            .bind_as(BindOptions::new(CLUSTER), NodeId(2))
            .await
            .expect("bind as 2");
        let anon = h
            .bind_without_node_id(BindOptions::new(CLUSTER))
            .await
            .expect("bind without node id");
        let err = expect_send_error(
            anon.send(b.local_addr(), Bytes::from_static(b"let me in")),
            "send without node id",
        )
        .await;
        assert!(refused(&err), "{err:?}");
        wait_for_stats::<H>(&b, "no-id refusal counted", |s| s.refused >= 1).await;
        assert_nothing_arrives(&b, Duration::from_millis(200), "no node id").await;
        assert_eq!(H::stats(&b).accepted, 0);

        let err = expect_send_error(
            b.send(anon.local_addr(), Bytes::from_static(b"secret")),
            "send to a server without node id",
        )
        .await;
        assert!(refused(&err), "{err:?}");
        assert_nothing_arrives(&anon, Duration::from_millis(200), "to no node id").await;
        assert_eq!(H::stats(&anon).accepted, 0);

        let a = h
            .bind_as(BindOptions::new(CLUSTER), NodeId(1))
            .await
            .expect("bind as 1");
        send_ok(&a, b.local_addr(), Bytes::from_static(b"member")).await;
        let got = recv_within(&b, "member").await;
        assert_eq!(got.peer_id, Some(NodeId(1)));
        for t in [&a, &b, &anon] {
            t.close().await;
        }
    }
}
