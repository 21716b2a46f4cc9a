//! Transport benchmark, all in one run: round-trip latency (median, p99) and
//! echo throughput (100-byte frames/s, MB/s with 1 MiB frames) for TCP,
//! TCP+TLS and QUIC, each beside a bare tokio TCP echo on loopback measured
//! in the same process, and as a ratio to it.
//!
//! Run: `cargo bench -p cassio-transport-quic --bench transport`
//! (set `CASSIO_BENCH_SCALE=0.1` for a quick smoke run).

#![allow(clippy::unwrap_used)] // a benchmark may unwrap

use bytes::Bytes;
use cassio_core::{Transport, TransportError};
use cassio_transport_quic::{QuicConfig, QuicTransport};
use cassio_transport_tcp::{tls, TcpConfig, TcpTransport};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

const SMALL: usize = 100;
const BIG: usize = 1 << 20;
/// Frames in flight in the throughput runs (below every queue's capacity).
const SMALL_WINDOW: usize = 1024;
const BIG_WINDOW: usize = 16;

struct Sizes {
    rtt: usize,
    small: usize,
    big: usize,
}

#[derive(Clone, Copy)]
struct Row {
    p50_us: f64,
    p99_us: f64,
    small_fps: f64,
    big_mbps: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let len = r.read_u32().await? as usize;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(())
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, f: &[u8]) -> std::io::Result<()> {
    w.write_u32(f.len() as u32).await?;
    w.write_all(f).await
}

/// The baseline: a length-prefixed echo over a bare tokio socket, with the
/// same buffering a careful hand-written server would use.
async fn bare_echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (r, w) = s.into_split();
                let mut r = BufReader::with_capacity(64 * 1024, r);
                let mut w = BufWriter::with_capacity(64 * 1024, w);
                let mut buf = Vec::new();
                while read_frame(&mut r, &mut buf).await.is_ok() {
                    if write_frame(&mut w, &buf).await.is_err() {
                        return;
                    }
                    if r.buffer().is_empty() && w.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn bare(sizes: &Sizes) -> Row {
    let addr = bare_echo_server().await;
    // Round trips, one at a time.
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let frame = vec![7u8; SMALL];
    let mut buf = Vec::new();
    let mut h = histogram();
    for i in 0..sizes.rtt + sizes.rtt / 10 {
        let t = Instant::now();
        write_frame(&mut w, &frame).await.unwrap();
        w.flush().await.unwrap();
        read_frame(&mut r, &mut buf).await.unwrap();
        if i >= sizes.rtt / 10 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    let small_fps = bare_stream(addr, SMALL, sizes.small, SMALL_WINDOW).await;
    let big = bare_stream(addr, BIG, sizes.big, BIG_WINDOW).await;
    row(&h, small_fps, big)
}

/// Pipelined echo with at most `window` frames in flight: every echo that
/// comes back lets one more frame out, as a flow-controlled client would.
/// Writing and reading run in separate tasks, so a window larger than the
/// socket buffers cannot deadlock.
async fn bare_stream(addr: SocketAddr, len: usize, n: usize, window: usize) -> f64 {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (r, w) = s.into_split();
    let credit = Arc::new(tokio::sync::Semaphore::new(window));
    let start = Instant::now();
    let writer = {
        let credit = credit.clone();
        tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(64 * 1024, w);
            let frame = vec![7u8; len];
            for _ in 0..n {
                let permit = match credit.try_acquire() {
                    Ok(p) => p,
                    Err(_) => {
                        // Out of credit: push out what is buffered, then wait.
                        w.flush().await.unwrap();
                        credit.acquire().await.unwrap()
                    }
                };
                permit.forget();
                write_frame(&mut w, &frame).await.unwrap();
            }
            w.flush().await.unwrap();
            w
        })
    };
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    for _ in 0..n {
        read_frame(&mut r, &mut buf).await.unwrap();
        assert_eq!(buf.len(), len);
        credit.add_permits(1);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(writer.await.unwrap());
    rate
}

async fn send_retry<T: Transport>(t: &T, to: SocketAddr, f: Bytes) {
    loop {
        match t.send(to, f.clone()).await {
            Ok(()) => return,
            Err(TransportError::QueueFull { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

async fn send_many_retry<T: Transport>(t: &T, to: SocketAddr, mut frames: Vec<Bytes>) {
    loop {
        match t.send_many(to, frames).await {
            Ok(()) => return,
            Err(e) if matches!(e.error, TransportError::QueueFull { .. }) => {
                frames = e.unsent;
                tokio::task::yield_now().await
            }
            Err(e) => panic!("send_many failed: {e}"),
        }
    }
}

/// How the cassio side moves frames: `send`/`recv` one at a time, or
/// `send_many`/`recv_many` (as the node's driver does).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    PerFrame,
    Batch,
}

/// Most frames one `recv_many` takes.
const BATCH: usize = 256;

async fn transport<T: Transport>(a: Arc<T>, b: Arc<T>, sizes: &Sizes, api: Api) -> Row {
    let a_addr = a.local_addr();
    let b_addr = b.local_addr();
    let echo = {
        let b = b.clone();
        tokio::spawn(async move {
            match api {
                Api::PerFrame => {
                    while let Ok(f) = b.recv().await {
                        send_retry(&*b, a_addr, f.payload).await;
                    }
                }
                Api::Batch => loop {
                    let mut got = Vec::with_capacity(BATCH);
                    if b.recv_many(&mut got, BATCH).await.is_err() {
                        return;
                    }
                    let frames = got.into_iter().map(|f| f.payload).collect();
                    send_many_retry(&*b, a_addr, frames).await;
                },
            }
        })
    };
    let frame = Bytes::from(vec![7u8; SMALL]);
    let mut h = histogram();
    for i in 0..sizes.rtt + sizes.rtt / 10 {
        let t = Instant::now();
        send_retry(&*a, b_addr, frame.clone()).await;
        a.recv().await.unwrap();
        if i >= sizes.rtt / 10 {
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
    }
    let (small_fps, big) = match api {
        Api::PerFrame => (
            transport_stream(&a, b_addr, SMALL, sizes.small, SMALL_WINDOW).await,
            transport_stream(&a, b_addr, BIG, sizes.big, BIG_WINDOW).await,
        ),
        Api::Batch => (
            transport_stream_batched(&a, b_addr, SMALL, sizes.small, SMALL_WINDOW).await,
            transport_stream_batched(&a, b_addr, BIG, sizes.big, BIG_WINDOW).await,
        ),
    };
    echo.abort();
    a.close().await;
    b.close().await;
    row(&h, small_fps, big)
}

async fn transport_stream<T: Transport>(
    a: &Arc<T>,
    to: SocketAddr,
    len: usize,
    n: usize,
    window: usize,
) -> f64 {
    let frame = Bytes::from(vec![7u8; len]);
    let start = Instant::now();
    let mut sent = 0;
    while sent < window.min(n) {
        send_retry(&**a, to, frame.clone()).await;
        sent += 1;
    }
    for _ in 0..n {
        let f = a.recv().await.unwrap();
        assert_eq!(f.payload.len(), len);
        if sent < n {
            send_retry(&**a, to, frame.clone()).await;
            sent += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// [`transport_stream`] through `send_many`/`recv_many`: every batch
/// received is answered by as many new frames in one call.
async fn transport_stream_batched<T: Transport>(
    a: &Arc<T>,
    to: SocketAddr,
    len: usize,
    n: usize,
    window: usize,
) -> f64 {
    let frame = Bytes::from(vec![7u8; len]);
    let start = Instant::now();
    let mut sent = window.min(n);
    send_many_retry(&**a, to, vec![frame.clone(); sent]).await;
    let mut received = 0;
    let mut got = Vec::with_capacity(BATCH);
    while received < n {
        got.clear();
        let k = a.recv_many(&mut got, BATCH).await.unwrap();
        assert!(got.iter().all(|f| f.payload.len() == len));
        received += k;
        let more = k.min(n - sent);
        if more > 0 {
            send_many_retry(&**a, to, vec![frame.clone(); more]).await;
            sent += more;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn row(h: &Histogram<u64>, small_fps: f64, big_fps: f64) -> Row {
    Row {
        p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
        small_fps,
        big_mbps: big_fps * BIG as f64 / 1e6,
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn main() {
    let scale: f64 = std::env::var("CASSIO_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let sizes = Sizes {
        rtt: (5_000.0 * scale) as usize,
        small: (200_000.0 * scale) as usize,
        big: (300.0 * scale) as usize,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::generate_dev_ca(dir.path(), "bench").unwrap();
    let certs = tls::generate_node_cert(&ca, dir.path(), cassio_core::NodeId(1), &[]).unwrap();
    let rows = rt.block_on(async {
        let mut rows = Vec::new();
        rows.push((
            "bare tokio TCP echo (baseline)".to_owned(),
            bare(&sizes).await,
        ));
        let pair = |c: TcpConfig| async move {
            (
                Arc::new(TcpTransport::bind(local(), c.clone()).await.unwrap()),
                Arc::new(TcpTransport::bind(local(), c).await.unwrap()),
            )
        };
        for (api, suffix) in [(Api::PerFrame, ""), (Api::Batch, ", batch API")] {
            let (a, b) = pair(TcpConfig::plaintext("bench")).await;
            rows.push((
                format!("cassio TCP{suffix}"),
                transport(a, b, &sizes, api).await,
            ));
            let (a, b) = pair(TcpConfig::mutual_tls("bench", certs.clone())).await;
            rows.push((
                format!("cassio TCP + mutual TLS{suffix}"),
                transport(a, b, &sizes, api).await,
            ));
            let qc = QuicConfig::with_files("bench", certs.clone());
            let a = Arc::new(QuicTransport::bind(local(), qc.clone()).await.unwrap());
            let b = Arc::new(QuicTransport::bind(local(), qc).await.unwrap());
            rows.push((
                format!("cassio QUIC{suffix}"),
                transport(a, b, &sizes, api).await,
            ));
        }
        rows
    });
    let base = rows[0].1;
    println!(
        "rtt: {} round trips of {SMALL} B; throughput: pipelined echo of {} x {SMALL} B (window {SMALL_WINDOW}) and {} x 1 MiB frames (window {BIG_WINDOW})",
        sizes.rtt, sizes.small, sizes.big
    );
    println!();
    println!("| transport | RTT p50 (µs) | RTT p99 (µs) | 100 B frames/s | 1 MiB MB/s | p50 ratio | frames/s ratio | MB/s ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2}× | {:.2}× | {:.2}× |",
            r.p50_us,
            r.p99_us,
            r.small_fps,
            r.big_mbps,
            // Latency ratio as speed (baseline / ours), so 1.0 = as fast and
            // every column reads "higher is better".
            base.p50_us / r.p50_us,
            r.small_fps / base.small_fps,
            r.big_mbps / base.big_mbps,
        );
    }
}
