//! The gateways' caps over loopback: connections per port (RESP, HTTP,
//! native), buffered input per connection and in total, keys per command,
//! and how each gateway reports an overloaded node.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use cassio_core::{ClientError, Consistency};
use cassio_node::client::Client;
use cassio_node::gateway::GatewayLimits;
use cassio_node::NodeBuilder;
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use gateway_common::{serve_http_with, serve_resp_with, spawn_fake};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn limits() -> GatewayLimits {
    GatewayLimits::default()
}

/// Sends `req` and reads until `want` has arrived (or the peer closes).
async fn exchange(s: &mut TcpStream, req: &[u8], want: usize) -> Vec<u8> {
    s.write_all(req).await.unwrap();
    read_at_least(s, want).await
}

async fn read_at_least(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap() {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Reads until the peer closes; what it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    read_at_least(s, usize::MAX).await
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn resp_refuses_connections_past_the_cap_and_admits_again_when_one_closes() {
    let fake = spawn_fake();
    let served = serve_resp_with(
        fake.handle.clone(),
        GatewayLimits {
            max_connections: 2,
            ..limits()
        },
    )
    .await;
    let mut a = connect(served.addr).await;
    let mut b = connect(served.addr).await;
    assert_eq!(exchange(&mut a, b"PING\r\n", 7).await, b"+PONG\r\n");
    assert_eq!(exchange(&mut b, b"PING\r\n", 7).await, b"+PONG\r\n");
    let mut c = connect(served.addr).await;
    let _ = c.write_all(b"PING\r\n").await;
    let refused = read_to_close(&mut c).await;
    assert_eq!(refused, b"-ERR max number of clients reached\r\n");
    drop(a);
    // The slot comes back once the server sees the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut d = connect(served.addr).await;
        if exchange(&mut d, b"PING\r\n", 7).await == b"+PONG\r\n" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(exchange(&mut b, b"PING\r\n", 7).await, b"+PONG\r\n");
    served.shutdown().await;
}

#[tokio::test]
async fn resp_closes_a_connection_over_its_query_buffer_limit() {
    let fake = spawn_fake();
    let served = serve_resp_with(
        fake.handle.clone(),
        GatewayLimits {
            max_query_buffer_bytes: 4096,
            ..limits()
        },
    )
    .await;
    let mut s = connect(served.addr).await;
    // A bulk announced at 100 kB: the buffer grows past 4 KiB while the
    // gateway waits for the rest.
    let mut req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 8192));
    let _ = s.write_all(&req).await;
    let got = String::from_utf8_lossy(&read_to_close(&mut s).await).to_string();
    assert!(
        got.starts_with("-ERR client query buffer of") && got.contains("max_query_buffer_bytes"),
        "{got}"
    );
    // Other connections are unaffected, and a command under the cap works.
    let mut t = connect(served.addr).await;
    assert_eq!(
        exchange(&mut t, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nok\r\n", 5).await,
        b"+OK\r\n"
    );
    served.shutdown().await;
}

#[tokio::test]
async fn resp_closes_the_connection_that_takes_the_total_over_its_cap() {
    let fake = spawn_fake();
    let served = serve_resp_with(
        fake.handle.clone(),
        GatewayLimits {
            max_query_buffer_bytes: 6000,
            max_total_query_buffer_bytes: 8000,
            ..limits()
        },
    )
    .await;
    let partial = |n: usize| {
        let mut r = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'x', n));
        r
    };
    let mut a = connect(served.addr).await;
    a.write_all(&partial(4500)).await.unwrap();
    // Let the gateway read it, so it holds A's bytes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = connect(served.addr).await;
    let _ = b.write_all(&partial(4500)).await;
    let got = String::from_utf8_lossy(&read_to_close(&mut b).await).to_string();
    assert!(got.contains("max_total_query_buffer_bytes"), "{got}");
    // A's bytes are released when A goes; then a new connection fits.
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = connect(served.addr).await;
        c.write_all(&partial(4500)).await.unwrap();
        // Held, not refused: nothing comes back while the command is incomplete.
        let probe = tokio::time::timeout(Duration::from_millis(300), c.read(&mut [0u8; 64])).await;
        if probe.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "total never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served.shutdown().await;
}

#[tokio::test]
async fn resp_refuses_multi_key_commands_over_the_key_cap() {
    let fake = spawn_fake();
    let served = serve_resp_with(
        fake.handle.clone(),
        GatewayLimits {
            max_keys_per_command: 2,
            ..limits()
        },
    )
    .await;
    let mut s = connect(served.addr).await;
    let got = exchange(&mut s, b"MGET a b c\r\n", 10).await;
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(
        got.starts_with(
            "-ERR too many keys: MGET names 3 keys, the limit is 2 (max_keys_per_command)"
        ),
        "{got}"
    );
    assert_eq!(
        exchange(&mut s, b"MGET a b\r\n", 14).await,
        b"*2\r\n$-1\r\n$-1\r\n"
    );
    served.shutdown().await;
}

#[tokio::test]
async fn an_overloaded_node_is_busy_over_resp_and_503_with_retry_after_over_http() {
    let fake = spawn_fake();
    let resp = serve_resp_with(fake.handle.clone(), limits()).await;
    let mut s = connect(resp.addr).await;
    let got = exchange(&mut s, b"GET overloaded-key\r\n", 10).await;
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(
        got.starts_with("-BUSY ") && got.contains("back off"),
        "{got}"
    );
    resp.shutdown().await;

    let http = serve_http_with(fake.handle.clone(), limits()).await;
    let r = reqwest::get(format!("http://{}/kv/overloaded-key", http.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
    http.shutdown().await;
}

#[tokio::test]
async fn http_refuses_connections_past_the_cap() {
    let fake = spawn_fake();
    let served = serve_http_with(
        fake.handle.clone(),
        GatewayLimits {
            max_connections: 1,
            ..limits()
        },
    )
    .await;
    let mut a = connect(served.addr).await;
    let got = exchange(&mut a, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 12).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // A holds the only slot (keep-alive); B is refused with a whole answer.
    let mut b = connect(served.addr).await;
    let _ = b
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = String::from_utf8_lossy(&read_to_close(&mut b).await).to_string();
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("Retry-After: 1"), "{got}");
    assert!(got.contains("too_many_connections"), "{got}");
    drop(a);
    // The refusal is counted (the HTTP gateway installed the recorder).
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        match reqwest::get(format!("http://{}/metrics", served.addr)).await {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
            _ => {
                assert!(tokio::time::Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let refused = text
        .lines()
        .find(|l| l.starts_with("cassio_gateway_connections_refused_total{protocol=\"http\"}"))
        .unwrap_or_else(|| panic!("no refusal counter in:\n{text}"));
    let n: f64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{refused}");
    served.shutdown().await;
}

#[tokio::test]
async fn the_native_port_answers_overloaded_past_its_connection_cap() {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("limits"),
    )
    .await
    .unwrap();
    let n = NodeBuilder::new(1, "limits")
        .transport(Arc::new(transport))
        .store(Arc::new(MemStore::new()))
        .replication_factor(1)
        .default_consistency(Consistency::One)
        .client_addr("127.0.0.1:0".parse().unwrap())
        .client_limits(GatewayLimits {
            max_connections: 1,
            ..limits()
        })
        .start()
        .await
        .unwrap();
    let addr = n.client_addr().unwrap();
    let first = Client::connect(&[addr]).await.unwrap();
    first.set("k", "v", None).await.unwrap();
    match Client::connect(&[addr]).await {
        Err(e) => assert_eq!(e.client_error(), Some(&ClientError::Overloaded), "{e:?}"),
        Ok(_) => panic!("a second connection past a cap of 1 was served"),
    }
    // The first connection is unaffected.
    assert_eq!(
        first.get("k", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    drop(first);
    n.shutdown(false).await.unwrap();
}
