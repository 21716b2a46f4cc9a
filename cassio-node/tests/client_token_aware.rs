//! The token-aware Rust client (`ClientConfig::token_aware`) against real
//! in-process nodes: with RF 1 its requests are coordinated by the key's
//! owner (each node's `/status` request counts match the keys its store
//! holds; a plain client's do not), a stopped node costs no request (the
//! plain path takes over), and a node that joins reaches the client's
//! layout (its version changes, requests land on the new owners).

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use cassio_core::{ClientError, Consistency};
use cassio_node::client::{Client, ClientConfig};
use cassio_node::{NodeBuilder, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Every wait here is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

struct TestNode {
    node: RunningNode,
    store: Arc<MemStore>,
}

impl TestNode {
    fn client_addr(&self) -> SocketAddr {
        self.node.client_addr().unwrap()
    }
}

async fn start(id: u64, seeds: Vec<SocketAddr>, rf: usize) -> TestNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("token-aware"),
    )
    .await
    .unwrap();
    let store = Arc::new(MemStore::new());
    let node = NodeBuilder::new(id, "token-aware")
        .transport(Arc::new(transport))
        .store(store.clone())
        .seeds(seeds)
        .replication_factor(rf)
        .default_consistency(Consistency::One)
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    TestNode { node, store }
}

/// Starts `n` nodes (the first one the seed) holding each key `rf` times,
/// and waits until every node's layout lists all of them `Normal`, up and
/// with a client address, and every node coordinates.
async fn cluster(n: u64, rf: usize) -> Vec<TestNode> {
    let first = start(1, vec![], rf).await;
    let seed = first.node.local_addr();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start(id, vec![seed], rf).await);
    }
    for node in &nodes {
        wait_layout(node.client_addr(), nodes.len()).await;
        wait_ready(node.client_addr()).await;
    }
    nodes
}

/// Waits until the node at `addr` lists `n` members `Normal`, up, with a
/// client address.
async fn wait_layout(addr: SocketAddr, n: usize) {
    let c = Client::connect(&[addr]).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let l = c.layout().await.unwrap();
        let complete = l
            .members
            .iter()
            .filter(|m| {
                m.up && m.state == cassio_core::NodeStatus::Normal && m.client_addr.is_some()
            })
            .count();
        if complete == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never saw {n} members: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node at `addr` coordinates (its view has settled).
async fn wait_ready(addr: SocketAddr) {
    let c = Client::connect(&[addr]).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
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

fn token_aware() -> ClientConfig {
    ClientConfig {
        token_aware: true,
        layout_refresh: Duration::from_millis(300),
        ..ClientConfig::default()
    }
}

/// How many `op` requests (`get`, `set`, `del`) the node at `addr`
/// coordinated in its `/status` window (the last complete seconds).
async fn coordinated(addr: SocketAddr, op: &str) -> u64 {
    let c = Client::connect(&[addr]).await.unwrap();
    let s = c.status().await.unwrap();
    s.requests
        .iter()
        .find(|o| o.op == op)
        .map_or(0.0, |o| o.rate * o.window_secs as f64)
        .round() as u64
}

/// How many of `keys` the node's store holds.
fn stored(node: &TestNode, keys: &[String]) -> u64 {
    let snapshot = node.store.snapshot();
    keys.iter()
        .filter(|k| snapshot.iter().any(|(sk, _)| sk.ends_with(k.as_bytes())))
        .count() as u64
}

/// The request window counts complete seconds only: wait for the current
/// one to end.
async fn settle_window() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rf_1_each_request_is_coordinated_by_its_keys_owner() {
    let nodes = cluster(3, 1).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(TestNode::client_addr).collect();
    let keys: Vec<String> = (0..90).map(|i| format!("ta-{i:03}")).collect();

    let client = Client::connect_with(&addrs, token_aware()).await.unwrap();
    let stats = client.routing_stats();
    assert!(stats.layout_version.is_some(), "{stats:?}");
    assert_eq!(stats.members, 3, "{stats:?}");
    for k in &keys {
        client.set(k.clone(), "v", None).await.unwrap();
        assert_eq!(
            client.get(k.clone(), None).await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    let stats = client.routing_stats();
    assert_eq!((stats.routed, stats.fallbacks), (180, 0), "{stats:?}");
    settle_window().await;
    // RF 1: a key lives on one store. Each node coordinated exactly the
    // writes of the keys its store holds: the owner coordinated each one.
    let mut total = 0;
    for node in &nodes {
        let (sets, held) = (
            coordinated(node.client_addr(), "set").await,
            stored(node, &keys),
        );
        assert!(held > 0, "node {} holds none of the keys", node.node.id());
        assert_eq!(
            sets,
            held,
            "node {} coordinated {sets} writes but holds {held} keys",
            node.node.id()
        );
        total += held;
    }
    assert_eq!(total, keys.len() as u64);
    // The client's own placement agrees with the stores.
    for k in &keys {
        let owner = client.replicas_of("default", k.as_bytes()).unwrap();
        assert_eq!(owner.len(), 1);
        let node = nodes.iter().find(|n| n.node.id().0 == owner[0]).unwrap();
        assert_eq!(
            stored(node, std::slice::from_ref(k)),
            1,
            "{k} is not on node {}",
            owner[0]
        );
    }

    // The same measure tells a plain client apart: its deletes are all
    // coordinated by the node it is connected to, owner or not.
    let plain = Client::connect(&addrs).await.unwrap();
    let first = plain.current_node().await.unwrap();
    for k in &keys {
        plain.del(k.clone(), None).await.unwrap();
    }
    assert_eq!(plain.routing_stats().routed, 0);
    settle_window().await;
    let mut mismatched = 0;
    for node in &nodes {
        let dels = coordinated(node.client_addr(), "del").await;
        let want = if node.client_addr() == first {
            keys.len() as u64
        } else {
            0
        };
        assert_eq!(dels, want, "node {}", node.node.id());
        if dels != stored(node, &keys) {
            mismatched += 1;
        }
    }
    assert!(
        mismatched >= 2,
        "a plain client's requests should not follow ownership"
    );

    for n in nodes {
        n.node.shutdown(false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_costs_no_request_the_plain_path_takes_over() {
    let mut nodes = cluster(3, 3).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(TestNode::client_addr).collect();
    // A failed node is avoided for a refresh interval: 5 s outlasts the
    // failure detector, so the stopped node is retried (and falls back)
    // only a few times however slow the host.
    let config = ClientConfig {
        layout_refresh: Duration::from_secs(5),
        ..token_aware()
    };
    let client = Client::connect_with(&addrs, config).await.unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("stop-{i:03}")).collect();
    // QUORUM (2 of 3) both ways: a read sees the write before it, with
    // one node down too.
    let q = Some(Consistency::Quorum);
    for k in &keys {
        client.set(k.clone(), "before", q).await.unwrap();
    }
    assert_eq!(client.routing_stats().fallbacks, 0);
    // Stop node 3 (one of every key's replicas; the first replica of
    // about a third of them): with ONE every request can still be served.
    let gone = nodes.pop().unwrap();
    let gone_id = gone.node.id().0;
    let first_on_gone = keys
        .iter()
        .filter(|k| client.replicas_of("default", k.as_bytes()).unwrap()[0] == gone_id)
        .count();
    assert!(first_on_gone > 0);
    gone.node.shutdown(false).await.unwrap();
    for k in &keys {
        client.set(k.clone(), "after", q).await.unwrap();
        assert_eq!(
            client.get(k.clone(), q).await.unwrap().as_deref(),
            Some(&b"after"[..]),
            "{k}"
        );
    }
    let stats = client.routing_stats();
    assert!(
        stats.fallbacks >= 1,
        "a request routed to the stopped node fell back: {stats:?}"
    );
    // The failed node is routed around afterwards: nearly every request
    // still goes straight to a replica.
    assert!(stats.routed >= 60 + 2 * 60 - 20, "{stats:?}");
    assert_eq!(stats.routed + stats.fallbacks, 60 + 2 * 60, "{stats:?}");
    for n in nodes {
        n.node.shutdown(false).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_reaches_the_clients_layout_and_its_keys() {
    let mut nodes = cluster(3, 1).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(TestNode::client_addr).collect();
    let client = Client::connect_with(&addrs, token_aware()).await.unwrap();
    let before = client.routing_stats();
    assert_eq!(before.members, 3);
    let seed = nodes[0].node.local_addr();
    nodes.push(start(4, vec![seed], 1).await);
    for node in &nodes {
        wait_layout(node.client_addr(), 4).await;
    }
    wait_ready(nodes[3].client_addr()).await;
    // The client refreshes at its requests once the interval passed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        client.get("probe", None).await.unwrap();
        let s = client.routing_stats();
        if s.members == 4 {
            assert_ne!(s.layout_version, before.layout_version, "{s:?}");
            assert!(s.layout_changes > before.layout_changes, "{s:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refreshed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys: Vec<String> = (0..120).map(|i| format!("join-{i:03}")).collect();
    for k in &keys {
        client.set(k.clone(), "v", None).await.unwrap();
    }
    settle_window().await;
    for node in &nodes {
        let (sets, held) = (
            coordinated(node.client_addr(), "set").await,
            stored(node, &keys),
        );
        assert_eq!(sets, held, "node {}", node.node.id());
    }
    assert!(stored(&nodes[3], &keys) > 0, "the new node owns some keys");
    for n in nodes {
        n.node.shutdown(false).await.unwrap();
    }
}
