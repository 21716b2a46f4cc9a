//! The native client protocol in one process: nodes from `NodeBuilder`,
//! the Rust client, failover, and garbage on the client port.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use cassio_core::{ClientError, Consistency};
use cassio_node::client::{Client, ClientConfig, Error};
use cassio_node::driver::StorageMode;
use cassio_node::{NodeBuilder, RequestError, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn node(id: u64, seeds: Vec<SocketAddr>, rf: usize) -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("client-test"),
    )
    .await
    .unwrap();
    NodeBuilder::new(id, "client-test")
        .transport(Arc::new(transport))
        .store(Arc::new(MemStore::new()))
        .seeds(seeds)
        .replication_factor(rf)
        .default_consistency(Consistency::One)
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

async fn wait_members(client: &Client, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = client.status().await.unwrap();
        if s.members
            .iter()
            .filter(|m| m.up && m.state == "Normal")
            .count()
            == n
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster did not form: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node at `addr` coordinates (its view has settled).
async fn wait_ready(addr: SocketAddr) {
    let c = Client::connect(&[addr]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match c.get("ready-probe", Some(Consistency::One)).await {
            Ok(_) => return,
            Err(e) if matches!(e.client_error(), Some(ClientError::Joining)) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn set_get_del_on_a_single_node_in_each_storage_mode() {
    for mode in [
        StorageMode::Inline,
        StorageMode::BlockingPerOp,
        StorageMode::Workers { threads: 2 },
    ] {
        let transport = TcpTransport::bind(
            "127.0.0.1:0".parse().unwrap(),
            TcpConfig::plaintext("single"),
        )
        .await
        .unwrap();
        let n = NodeBuilder::new(1, "single")
            .transport(Arc::new(transport))
            .store(Arc::new(MemStore::new()))
            .replication_factor(1)
            .storage_mode(mode)
            .client_addr("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        let c = Client::connect(&[n.client_addr().unwrap()]).await.unwrap();
        assert_eq!(c.get("k", None).await.unwrap(), None, "{mode:?}");
        let t1 = c.set("k", "v1", None).await.unwrap();
        assert_eq!(c.get("k", None).await.unwrap().as_deref(), Some(&b"v1"[..]));
        let t2 = c.del("k", Some(Consistency::All)).await.unwrap();
        assert!(t2 > t1);
        assert_eq!(c.get("k", None).await.unwrap(), None);
        // RF 1 has one replica: TWO cannot be met and says so.
        let e = c.get("k", Some(Consistency::Two)).await.unwrap_err();
        assert!(
            matches!(
                e.client_error(),
                Some(ClientError::InvalidConsistency { .. })
            ),
            "{e:?}"
        );
        n.shutdown(false).await.unwrap();
        // After shutdown the port is closed: connecting fails cleanly.
        assert!(Client::connect(&[c.current_node().await.unwrap()])
            .await
            .is_err());
    }
}

#[tokio::test]
async fn oversize_values_are_bad_requests_not_dropped_connections() {
    let n = node(1, vec![], 1).await;
    let c = Client::connect(&[n.client_addr().unwrap()]).await.unwrap();
    let big = vec![0u8; cassio_node::driver::MAX_VALUE_LEN + 1];
    let e = c.set("k", big, None).await.unwrap_err();
    assert!(
        matches!(e, Error::Request(RequestError::BadRequest(_))),
        "{e:?}"
    );
    c.set("k", "small", None).await.unwrap();
    n.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let n = node(1, vec![], 1).await;
    let addr = n.client_addr().unwrap();
    let good = Client::connect(&[addr]).await.unwrap();
    good.set("k", "v", None).await.unwrap();

    for garbage in [
        // A huge announced length: refused before anything is allocated.
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // A wrong version byte.
        vec![0, 0, 0, 3, 99, 1, 2],
        // Right version, undecodable body.
        vec![0, 0, 0, 4, 1, 0xff, 0xff, 0xff],
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&garbage).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server should close a garbage connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // The other connection and the node are unaffected.
    assert_eq!(
        good.get("k", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    n.shutdown(false).await.unwrap();
}

#[tokio::test]
async fn client_fails_over_to_the_next_node() {
    // A port nobody listens on comes first: the client moves past it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let a = node(1, vec![], 2).await;
    let b = node(2, vec![a.local_addr()], 2).await;
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    let c = Client::connect_with(
        &[dead, a.client_addr().unwrap(), b.client_addr().unwrap()],
        cfg,
    )
    .await
    .unwrap();
    assert_eq!(c.current_node().await, a.client_addr());
    wait_members(&c, 2).await;
    wait_ready(b.client_addr().unwrap()).await;
    c.set("k", "v", Some(Consistency::All)).await.unwrap();

    // The node the client talks to goes away; the next request moves on.
    a.shutdown(false).await.unwrap();
    let v = c.get("k", Some(Consistency::One)).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    assert_eq!(c.current_node().await, b.client_addr());
    b.shutdown(false).await.unwrap();

    // Nobody left: a typed error naming the last node tried.
    let e = c.get("k", None).await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
}

#[tokio::test]
async fn leaving_node_is_seen_as_left() {
    // RF 1: a node leaves only if at least RF token owners remain, so with
    // two nodes RF 2 would (rightly) keep it from leaving.
    let a = node(1, vec![], 1).await;
    let b = node(2, vec![a.local_addr()], 1).await;
    let c = Client::connect(&[a.client_addr().unwrap()]).await.unwrap();
    wait_members(&c, 2).await;
    b.shutdown(true).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.status().await.unwrap();
        if s.members.iter().any(|m| m.id == 2 && m.state == "Left") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.shutdown(false).await.unwrap();
}
