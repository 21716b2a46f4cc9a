//! Membership as a pure state machine: message sizes, delta splitting,
//! leave and forget, probes with backoff.

use cassio_core::membership::{
    AppState, GossipConfig, GossipMsg, GossipSend, Membership, MembershipEvent, NodeState,
    NodeStatus,
};
use cassio_core::placement::default_tokens;
use cassio_core::wire::WireCodec;
use cassio_core::{Instant, NodeId, PeerMsg};
use core::net::SocketAddr;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

fn addr(i: u64) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000))
}

fn app(i: u64, vnodes: u16) -> AppState {
    AppState {
        status: NodeStatus::Normal,
        addr: addr(i),
        tokens: default_tokens(NodeId(i), vnodes),
        keyspaces: vec![cassio_core::KeyspaceConfig::default_keyspace(3)],
        load: 123_456_789_012,
        repaired_through: 1_763_000_000_000_000,
        repaired_schema: 0,
        hinting: vec![NodeId(1), NodeId(2)],
        ring_acked: 0,
        ring_synced: 0,
        removing: Vec::new(),
        removed: Vec::new(),
        datacenter: "dc1".into(),
        rack: "rack1".into(),
        client_addr: None,
    }
}

fn member(i: u64, cfg: &GossipConfig, seeds: &[SocketAddr]) -> Membership {
    // Generations are wall-clock seconds, as real nodes use.
    Membership::new(
        NodeId(i),
        1_763_000_000 + i,
        app(i, 256),
        seeds,
        cfg.clone(),
        Instant::ZERO,
    )
}

fn state(i: u64, version: u64) -> NodeState {
    NodeState {
        id: NodeId(i),
        generation: 1_763_000_000 + i,
        version,
        app_version: 1,
        app: Some(app(i, 256)),
    }
}

#[test]
fn a_digest_of_a_thousand_nodes_fits_in_64_kib() {
    let cfg = GossipConfig::default();
    let mut m = member(1, &cfg, &[]);
    for i in 2..=1000 {
        m.insert_member(state(i, 1_000_000 + i), Instant::ZERO);
    }
    assert_eq!(m.members().len(), 1000);
    let frame = WireCodec::new("production-cluster")
        .encode(NodeId(1), &PeerMsg::Gossip(m.syn()))
        .expect("encode");
    assert!(
        frame.len() <= 64 * 1024,
        "digest frame is {} bytes",
        frame.len()
    );
}

/// Runs one Syn → Ack → Ack2 exchange from `a` to `b`; returns the Ack's
/// encoded size.
fn exchange(
    a: &mut Membership,
    b: &mut Membership,
    ida: u64,
    idb: u64,
    now: Instant,
    rng: &mut ChaCha8Rng,
) -> usize {
    let codec = WireCodec::new("c");
    let mut ev = Vec::new();
    let syn = a.syn();
    let ack = b.handle_gossip(NodeId(ida), syn, now, rng, &mut ev);
    let GossipSend { msg: ack, .. } = ack.into_iter().next().expect("an ack");
    let size = codec
        .encode(NodeId(idb), &PeerMsg::Gossip(ack.clone()))
        .expect("encode")
        .len();
    for GossipSend { msg, .. } in a.handle_gossip(NodeId(idb), ack, now, rng, &mut ev) {
        b.handle_gossip(NodeId(ida), msg, now, rng, &mut ev);
    }
    size
}

#[test]
fn large_deltas_are_split_across_rounds_under_the_cap() {
    let cfg = GossipConfig {
        max_message_bytes: 48 * 1024,
        ..GossipConfig::default()
    };
    let mut old = member(1, &cfg, &[]);
    for i in 3..=300 {
        old.insert_member(state(i, 10), Instant::ZERO);
    }
    let mut newcomer = member(2, &cfg, &[addr(1)]);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut rounds = 0;
    while newcomer.members().len() < 300 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "only {} members after 20 rounds",
            newcomer.members().len()
        );
        let size = exchange(
            &mut newcomer,
            &mut old,
            2,
            1,
            Instant::from_micros(rounds * 1_000_000),
            &mut rng,
        );
        assert!(size <= 64 * 1024, "ack of {size} bytes");
    }
    // 299 states of 256 tokens (~2.6 KB each) cannot fit in one 48 KiB message.
    assert!(
        rounds > 1,
        "expected the delta to be split, took {rounds} round"
    );
    assert!(old.is_member(NodeId(2)), "the exchange works both ways");
}

#[test]
fn leaving_goes_left_then_is_forgotten_and_not_readmitted() {
    let cfg = GossipConfig {
        forget_left_after: Duration::from_secs(60),
        ..GossipConfig::default()
    };
    let mut a = member(1, &cfg, &[]);
    let mut b = member(2, &cfg, &[addr(1)]);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut ev = Vec::new();
    let s = |secs: u64| Instant::from_micros(secs * 1_000_000);
    exchange(&mut b, &mut a, 2, 1, s(0), &mut rng);
    assert_eq!(
        b.status(),
        NodeStatus::Normal,
        "joined after the first answer"
    );
    assert!(a.is_member(NodeId(2)));
    b.leave();
    assert_eq!(b.status(), NodeStatus::Leaving);
    // Leaving, a node keeps its tokens on the current ring (it serves while
    // its ranges move) but not on the next one.
    exchange(&mut b, &mut a, 2, 1, s(1), &mut rng);
    assert!(a.token_owners().iter().any(|(id, _)| *id == NodeId(2)));
    assert!(a.token_owners_next().iter().all(|(id, _)| *id != NodeId(2)));
    for t in 1..=4 {
        b.handle_timeout(s(t), &mut rng, &mut ev);
        a.handle_timeout(s(t), &mut rng, &mut ev);
        exchange(&mut b, &mut a, 2, 1, s(t), &mut rng);
    }
    assert!(!b.has_left(), "only the node decides its ranges moved");
    b.complete_leave();
    for t in 5..=6 {
        b.handle_timeout(s(t), &mut rng, &mut ev);
        exchange(&mut b, &mut a, 2, 1, s(t), &mut rng);
    }
    assert!(b.has_left());
    assert_eq!(
        a.state_of(NodeId(2)).map(|(_, app)| app.status),
        Some(NodeStatus::Left)
    );
    assert!(
        a.token_owners().iter().all(|(id, _)| *id != NodeId(2)),
        "a left node owns no tokens"
    );
    ev.clear();
    a.handle_timeout(s(70), &mut rng, &mut ev);
    assert!(
        ev.iter()
            .any(|e| matches!(e, MembershipEvent::Removed { id: NodeId(2), .. })),
        "{ev:?}"
    );
    assert!(!a.is_member(NodeId(2)));
    // Old gossip about the same generation does not bring it back.
    a.insert_member(
        NodeState {
            id: NodeId(2),
            generation: 1_763_000_002,
            version: 99,
            app_version: 99,
            app: Some(app(2, 256)),
        },
        s(71),
    );
    assert!(!a.is_member(NodeId(2)));
}

#[test]
fn down_peers_are_probed_with_doubling_backoff_and_come_back_on_first_answer() {
    let cfg = GossipConfig::default();
    let mut a = member(1, &cfg, &[]);
    a.insert_member(state(2, 5), Instant::ZERO);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut ev = Vec::new();
    let mut probe_times = Vec::new();
    let mut now = Instant::ZERO;
    while now < Instant::from_micros(200_000_000) {
        now = a.poll_timeout().max(now);
        for send in a.handle_timeout(now, &mut rng, &mut ev) {
            if send.to == Some(NodeId(2)) && !a.is_alive(NodeId(2)) {
                probe_times.push(now.as_micros() as f64 / 1e6);
            }
        }
        now = now + Duration::from_millis(1);
    }
    assert!(ev.contains(&MembershipEvent::Down(NodeId(2))));
    assert!(probe_times.len() >= 4, "probes at {probe_times:?}");
    let gaps: Vec<f64> = probe_times.windows(2).map(|w| w[1] - w[0]).collect();
    // Doubling, with ±25% jitter, up to the cap.
    assert!(gaps[2] > gaps[0] * 1.5, "gaps {gaps:?}");
    assert!(
        gaps.iter()
            .all(|&g| g <= cfg.probe_max_interval.as_secs_f64() * 1.25 + 1.0),
        "gaps {gaps:?}"
    );
    // Any message from it brings it back at once.
    ev.clear();
    a.heard_from(NodeId(2), now, &mut ev);
    assert!(a.is_alive(NodeId(2)));
    assert_eq!(ev, vec![MembershipEvent::Up(NodeId(2))]);
}

#[test]
fn a_new_generation_is_announced_as_a_restart() {
    let cfg = GossipConfig::default();
    let mut a = member(1, &cfg, &[]);
    a.insert_member(state(2, 5), Instant::ZERO);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut ev = Vec::new();
    let mut restarted = state(2, 1);
    restarted.generation += 100;
    let msg = GossipMsg::Ack2 {
        states: vec![restarted],
    };
    a.handle_gossip(
        NodeId(2),
        msg,
        Instant::from_micros(5_000_000),
        &mut rng,
        &mut ev,
    );
    assert!(
        ev.contains(&MembershipEvent::Restarted {
            id: NodeId(2),
            generation: 1_763_000_102
        }),
        "{ev:?}"
    );
    assert_eq!(a.state_of(NodeId(2)).map(|(g, _)| g), Some(1_763_000_102));
}

#[test]
fn a_stranger_speaks_only_for_itself_and_far_future_generations_are_refused() {
    let cfg = GossipConfig::default();
    let mut a = member(1, &cfg, &[]);
    a.set_wall(1_763_000_000 * 1_000_000);
    a.insert_member(state(2, 5), Instant::ZERO);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut ev = Vec::new();
    // Node 9 is not a member: it may introduce itself, not others, and may
    // not overwrite what we know of node 2.
    let mut forged2 = state(2, 50);
    forged2.app = Some(AppState {
        addr: addr(99),
        ..app(2, 256)
    });
    let msg = GossipMsg::Ack2 {
        states: vec![state(9, 1), state(7, 1), forged2],
    };
    a.handle_gossip(NodeId(9), msg, Instant::from_micros(1), &mut rng, &mut ev);
    assert!(a.is_member(NodeId(9)), "a stranger introduces itself");
    assert!(!a.is_member(NodeId(7)), "but not a third node");
    assert_eq!(a.addr_of(NodeId(2)), Some(addr(2)), "nor rewrites a member");
    // A member's state from a generation a year ahead is refused.
    let mut future = state(3, 1);
    future.generation += 365 * 24 * 3600;
    a.handle_gossip(
        NodeId(2),
        GossipMsg::Ack2 {
            states: vec![future],
        },
        Instant::from_micros(2),
        &mut rng,
        &mut ev,
    );
    assert!(!a.is_member(NodeId(3)));
}

/// A seed is excused from founding the schema only when it is gone
/// without tokens: down while it owns none (it died joining), or
/// forgotten (removed). A down token owner, a live joiner, an unknown
/// address and the node itself are not.
#[test]
fn gone_without_tokens_is_a_dead_joiner_or_a_removed_member() {
    let cfg = GossipConfig::default();
    let mut a = member(1, &cfg, &[]);
    a.insert_member(state(2, 5), Instant::ZERO);
    let mut joiner = state(3, 5);
    if let Some(app) = joiner.app.as_mut() {
        app.status = NodeStatus::Joining;
    }
    a.insert_member(joiner, Instant::ZERO);
    assert!(!a.gone_without_tokens(addr(3)), "a live joiner");
    assert!(!a.gone_without_tokens(addr(2)), "a live owner");
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut ev = Vec::new();
    let mut now = Instant::ZERO;
    while now < Instant::from_micros(60_000_000) {
        now = a.poll_timeout().max(now);
        a.handle_timeout(now, &mut rng, &mut ev);
        now = now + Duration::from_millis(1);
    }
    assert!(!a.is_alive(NodeId(2)) && !a.is_alive(NodeId(3)), "{ev:?}");
    assert!(a.gone_without_tokens(addr(3)), "died joining");
    assert!(!a.gone_without_tokens(addr(2)), "a down owner still owns");
    assert!(!a.gone_without_tokens(addr(9)), "never heard of");
    assert!(!a.gone_without_tokens(addr(1)), "itself");
    a.complete_removal(NodeId(2), now, &mut ev);
    assert!(!a.is_member(NodeId(2)));
    assert!(a.gone_without_tokens(addr(2)), "removed");
}
