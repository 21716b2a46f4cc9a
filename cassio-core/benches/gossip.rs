//! CPU cost of gossip on a node that knows 1,000 peers: one round (suspicion
//! check, heartbeat, Syn to two peers, encoded), and answering a peer's Syn
//! (digest comparison, Ack encoded).
//!
//! `cargo bench -p cassio-core --bench gossip`

#![allow(missing_docs)] // criterion's macros generate undocumented public items

use cassio_core::membership::{AppState, GossipConfig, Membership, NodeState, NodeStatus};
use cassio_core::placement::default_tokens;
use cassio_core::wire::WireCodec;
use cassio_core::{Instant, NodeId, PeerMsg};
use core::net::SocketAddr;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

fn addr(i: u64) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000))
}

fn app(i: u64) -> AppState {
    AppState {
        status: NodeStatus::Normal,
        addr: addr(i),
        tokens: default_tokens(NodeId(i), 256),
        keyspaces: vec![cassio_core::KeyspaceConfig::default_keyspace(3)],
        load: 1 << 30,
        repaired_through: 1_800_000_000_000_000,
        repaired_schema: 0,
        hinting: Vec::new(),
        ring_acked: 0,
        ring_synced: 0,
        removing: Vec::new(),
        removed: Vec::new(),
        datacenter: "dc1".into(),
        rack: "rack1".into(),
        client_addr: None,
    }
}

fn node_with_peers(me: u64, peers: u64) -> Membership {
    let mut m = Membership::new(
        NodeId(me),
        1_763_000_000,
        app(me),
        &[],
        GossipConfig::default(),
        Instant::ZERO,
    );
    for i in 1..=peers + 1 {
        if i != me {
            m.insert_member(
                NodeState {
                    id: NodeId(i),
                    generation: 1_763_000_000 + i,
                    version: 10,
                    app_version: 1,
                    app: Some(app(i)),
                },
                Instant::ZERO,
            );
        }
    }
    m
}

fn bench(c: &mut Criterion) {
    let codec = WireCodec::new("bench");
    let mut m = node_with_peers(1, 1000);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut t = 1_000_000u64;
    c.bench_function("gossip round, 1000 peers (check + Syn encoded)", |b| {
        b.iter(|| {
            t += 1_000_000;
            let mut ev = Vec::new();
            let sends = m.handle_timeout(Instant::from_micros(t), &mut rng, &mut ev);
            for s in sends {
                black_box(
                    codec
                        .encode(NodeId(1), &PeerMsg::Gossip(s.msg))
                        .map(|f| f.len())
                        .unwrap_or(0),
                );
            }
        })
    });
    let mut responder = node_with_peers(2, 1000);
    let syn = node_with_peers(1, 1000).syn();
    c.bench_function("answer a Syn of 1000 digests (Ack encoded)", |b| {
        b.iter(|| {
            t += 1_000_000;
            let mut ev = Vec::new();
            let acks = responder.handle_gossip(
                NodeId(1),
                syn.clone(),
                Instant::from_micros(t),
                &mut rng,
                &mut ev,
            );
            for s in acks {
                black_box(
                    codec
                        .encode(NodeId(2), &PeerMsg::Gossip(s.msg))
                        .map(|f| f.len())
                        .unwrap_or(0),
                );
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
