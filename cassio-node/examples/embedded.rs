//! Three Cassio nodes in one process, then a client that sets, gets and
//! deletes a key: the shape of the original Cassiopeia README's example.
//!
//! Run: `cargo run -p cassio-node --example embedded`

use cassio_core::Consistency;
use cassio_node::client::Client;
use cassio_node::NodeBuilder;
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Start three nodes; the first is the seed the others join through.
    let mut nodes = Vec::new();
    let mut seeds = Vec::new();
    for id in 1..=3 {
        let transport =
            TcpTransport::bind("127.0.0.1:0".parse()?, TcpConfig::plaintext("demo")).await?;
        let node = NodeBuilder::new(id, "demo")
            .transport(Arc::new(transport))
            .store(Arc::new(MemStore::new()))
            .seeds(seeds.clone())
            .replication_factor(3)
            .gossip_interval(Duration::from_millis(200))
            .client_addr("127.0.0.1:0".parse()?)
            .start()
            .await?;
        println!("node {id} listening for peers on {}", node.local_addr());
        if seeds.is_empty() {
            seeds.push(node.local_addr());
        }
        nodes.push(node);
    }

    // Connect a client to any of them (it fails over to the others).
    let addrs: Vec<_> = nodes.iter().filter_map(|n| n.client_addr()).collect();
    let client = Client::connect(&addrs).await?;

    // Wait until every node sees the other two as Normal members.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status().await?;
        let normal = status
            .members
            .iter()
            .filter(|m| m.up && m.state == "Normal")
            .count();
        if normal == 3 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the cluster did not form in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    client.set("user1", r#"{"name": "Jack"}"#, None).await?;
    let value = client.get("user1", Some(Consistency::All)).await?;
    println!(
        "get user1 -> {}",
        value
            .as_deref()
            .map_or("(nil)".into(), String::from_utf8_lossy)
    );
    client.del("user1", Some(Consistency::Quorum)).await?;
    let value = client.get("user1", None).await?;
    println!(
        "after del, get user1 -> {}",
        value
            .as_deref()
            .map_or("(nil)".into(), String::from_utf8_lossy)
    );

    for node in nodes {
        node.shutdown(false).await?;
    }
    Ok(())
}
