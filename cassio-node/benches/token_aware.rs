//! The token-aware client against the plain client in the same run
//! (issue 15): three in-process nodes (TCP between them, in-memory
//! stores), `TA_TASKS` concurrent tasks (one client each) doing SET then
//! GET of random keys for `TA_SECS` seconds, the plain client and the
//! token-aware one alternately, `TA_ROUNDS` times each; for RF 3 at QUORUM
//! and RF 1 at ONE. Prints each round's ops/s, the medians, and the ratio.
//!
//! ```text
//! cargo bench -p cassio-node --bench token_aware
//! TA_TASKS=32 TA_SECS=3 TA_ROUNDS=5 cargo bench -p cassio-node --bench token_aware
//! ```
//!
//! `TA_DIAG=1` adds a third client per round: three plain clients per task
//! (one per node), each request sent on one of them by its key, i.e. the
//! token-aware client's connections without its routing.
//!
//! Everything shares one machine (nodes, clients, loopback): the figures
//! compare the two clients under the same conditions; they are not a
//! cluster's throughput.

// A benchmark harness: a failure to start the cluster is a failed run.
#![allow(clippy::unwrap_used)]

use cassio_core::Consistency;
use cassio_node::client::{Client, ClientConfig};
use cassio_node::{NodeBuilder, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(id: u64, seeds: Vec<SocketAddr>, rf: usize) -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("bench-ta"),
    )
    .await
    .unwrap();
    NodeBuilder::new(id, "bench-ta")
        .transport(Arc::new(transport))
        .store(Arc::new(MemStore::new()))
        .seeds(seeds)
        .replication_factor(rf)
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// Three nodes, each seeing all three with client addresses and
/// coordinating.
async fn cluster(rf: usize) -> Vec<RunningNode> {
    let first = start(1, vec![], rf).await;
    let seed = first.local_addr();
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start(id, vec![seed], rf).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &nodes {
        let c = Client::connect(&[n.client_addr().unwrap()]).await.unwrap();
        loop {
            let l = c.layout().await.unwrap();
            let ready = l
                .members
                .iter()
                .filter(|m| {
                    m.up && m.state == cassio_core::NodeStatus::Normal && m.client_addr.is_some()
                })
                .count()
                == 3
                && c.get("probe", Some(Consistency::One)).await.is_ok();
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not form");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes
}

/// Ops per second of `tasks` clients doing SET+GET for `secs`.
/// Which client a round measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One plain client per task.
    Plain,
    /// One token-aware client per task.
    TokenAware,
    /// (`TA_DIAG=1`) Three plain clients per task, one per node, each
    /// request on one of them by its key: the token-aware client's
    /// connections without its routing.
    PlainPerNode,
}

async fn round(
    addrs: &[SocketAddr],
    mode: Mode,
    tasks: u64,
    secs: u64,
    level: Consistency,
) -> (f64, u64, u64) {
    let config = ClientConfig {
        token_aware: mode == Mode::TokenAware,
        ..ClientConfig::default()
    };
    let per_task = if mode == Mode::PlainPerNode {
        addrs.len()
    } else {
        1
    };
    let mut clients = Vec::new();
    for i in 0..tasks {
        let mut task_clients = Vec::new();
        for j in 0..per_task {
            // Plain clients spread over the nodes, as an application would.
            let mut a = addrs.to_vec();
            a.rotate_left(usize::try_from(i).unwrap_or(0).wrapping_add(j) % addrs.len());
            task_clients.push(Client::connect_with(&a, config.clone()).await.unwrap());
        }
        clients.push(Arc::new(task_clients));
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let c = c.clone();
        set.spawn(async move {
            let mut ops = 0u64;
            let mut errors = 0u64;
            let mut n = i as u64 * 7919;
            while Instant::now() < end {
                let c = &c[usize::try_from(n >> 40).unwrap_or(0) % c.len()];
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("bench-{}", (n >> 33) % 10_000);
                match c
                    .set(
                        key.clone(),
                        "value-of-64-bytes-0123456789abcdef0123456789abcdef0123456789",
                        Some(level),
                    )
                    .await
                {
                    Ok(_) => ops += 1,
                    Err(_) => errors += 1,
                }
                match c.get(key, Some(level)).await {
                    Ok(_) => ops += 1,
                    Err(_) => errors += 1,
                }
            }
            (ops, errors)
        });
    }
    let (mut ops, mut errors) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (o, e) = r.unwrap();
        ops += o;
        errors += e;
    }
    let routed: u64 = clients
        .iter()
        .flat_map(|c| c.iter())
        .map(|c| c.routing_stats().routed)
        .sum();
    (ops as f64 / start.elapsed().as_secs_f64(), errors, routed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let tasks = env("TA_TASKS", 16);
    let secs = env("TA_SECS", 2);
    let rounds = env("TA_ROUNDS", 5);
    let diag = env("TA_DIAG", 0) == 1;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("token_aware: 3 nodes, {tasks} tasks, {secs} s per round, {rounds} rounds per client");
        for (rf, level) in [(3, Consistency::Quorum), (1, Consistency::One)] {
            let nodes = cluster(rf).await;
            let addrs: Vec<SocketAddr> =
                nodes.iter().map(|n| n.client_addr().unwrap()).collect();
            let (mut plain, mut aware, mut per_node) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rounds {
                let (p, pe, _) = round(&addrs, Mode::Plain, tasks, secs, level).await;
                let (a, ae, routed) = round(&addrs, Mode::TokenAware, tasks, secs, level).await;
                println!(
                    "RF {rf} {level:?} round {r}: plain {p:.0} ops/s ({pe} errors), token-aware {a:.0} ops/s ({ae} errors, {routed} routed)"
                );
                if diag {
                    let (d, de, _) =
                        round(&addrs, Mode::PlainPerNode, tasks, secs, level).await;
                    println!("RF {rf} {level:?} round {r}: plain, a client per node {d:.0} ops/s ({de} errors)");
                    per_node.push(d);
                }
                plain.push(p);
                aware.push(a);
            }
            if diag {
                println!(
                    "RF {rf} {level:?}: median plain with a client per node {:.0} ops/s",
                    median(per_node)
                );
            }
            let (p, a) = (median(plain), median(aware));
            println!(
                "RF {rf} {level:?}: median plain {p:.0} ops/s, token-aware {a:.0} ops/s, ratio {:.2}",
                a / p
            );
            for n in nodes {
                n.shutdown(false).await.unwrap();
            }
        }
    });
}
