//! The coordinator and replica, driven by hand through the sans-IO API.

use bytes::Bytes;
use cassio_core::config::{Config, Consistency};
use cassio_core::node::storage_key;
use cassio_core::ApplyOutcome;
use cassio_core::{
    ClientError, ClientRequest, ClientResponse, Instant, Node, NodeEvent, NodeId, Output, PeerMsg,
    RequestId, StorageOp, StorageResult, Timestamp, Versioned, WriteOutcome,
};
use std::time::Duration;

const WALL: u64 = 1_700_000_000_000_000;

fn addr(i: u64) -> core::net::SocketAddr {
    core::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

fn config(me: u64) -> Config {
    let mut c = Config::new("test", addr(me));
    c.seeds = vec![addr(1)];
    c
}

/// Three nodes that found each other by gossip (frames routed by hand);
/// returns node `me` with every output drained.
fn node_with(me: u64, make: impl Fn(u64) -> Config) -> Node {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node::new(NodeId(i), make(i), Instant::ZERO, WALL).expect("valid config"))
        .collect();
    for round in 0..6u64 {
        let now = Instant::from_micros(round * 1_000_000);
        for n in nodes.iter_mut() {
            n.handle_timeout(now);
        }
        // Deliver until quiet.
        loop {
            let mut frames = Vec::new();
            for n in nodes.iter_mut() {
                while let Some(o) = n.poll_output() {
                    if let Output::Send { addr: to, msg, .. } = o {
                        frames.push((n.id(), to, msg));
                    }
                }
            }
            if frames.is_empty() {
                break;
            }
            for (from, to, msg) in frames {
                let idx = usize::from(to.port() - 7001);
                nodes[idx].handle_message(now, from, msg);
            }
        }
    }
    let mut n = nodes.swap_remove(usize::try_from(me - 1).expect("small"));
    assert_eq!(n.membership().members().len(), 3, "gossip did not converge");
    drain(&mut n);
    n
}

fn node(me: u64) -> Node {
    node_with(me, config)
}

/// A time after the gossip warm-up.
const T0: u64 = 10_000;

fn drain(n: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

fn replies(out: &[Output]) -> Vec<(RequestId, Result<ClientResponse, ClientError>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply { id, result } => Some((*id, result.clone())),
            _ => None,
        })
        .collect()
}

fn sends(out: &[Output]) -> Vec<(NodeId, PeerMsg)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to: Some(to), msg, ..
            } if !matches!(msg, PeerMsg::Gossip(_)) => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn storage(out: &[Output]) -> Vec<(cassio_core::StorageToken, StorageOp)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Storage { token, op } => Some((*token, op.clone())),
            _ => None,
        })
        .collect()
}

fn t(ms: u64) -> Instant {
    Instant::from_micros((T0 + ms) * 1000)
}

#[test]
fn quorum_write_answers_after_two_acks_and_ignores_duplicates() {
    let mut n = node(1);
    drain(&mut n);
    n.handle_client(t(1), RequestId(9), ClientRequest::put("k", "v"));
    let out = drain(&mut n);
    let local = storage(&out);
    let remote = sends(&out);
    assert_eq!(
        local.len(),
        1,
        "the coordinator is a replica (RF=3 on 3 nodes)"
    );
    assert_eq!(remote.len(), 2);
    let tag = match &remote[0].1 {
        PeerMsg::Write { tag, .. } => *tag,
        m => panic!("expected a write, got {m:?}"),
    };
    // The same ack twice counts once.
    n.handle_message(
        t(2),
        NodeId(2),
        PeerMsg::WriteAck {
            tag,
            outcome: WriteOutcome::Applied,
        },
    );
    n.handle_message(
        t(2),
        NodeId(2),
        PeerMsg::WriteAck {
            tag,
            outcome: WriteOutcome::Applied,
        },
    );
    assert!(
        replies(&drain(&mut n)).is_empty(),
        "one distinct ack is not a quorum"
    );
    n.handle_storage(
        t(3),
        local[0].0,
        StorageResult::Applied(Ok(ApplyOutcome::Kept { replaced: None })),
    );
    let r = replies(&drain(&mut n));
    assert!(
        matches!(
            r.as_slice(),
            [(RequestId(9), Ok(ClientResponse::Written { .. }))]
        ),
        "{r:?}"
    );
    // A late ack and a replayed storage completion change nothing.
    n.handle_message(
        t(4),
        NodeId(3),
        PeerMsg::WriteAck {
            tag,
            outcome: WriteOutcome::Applied,
        },
    );
    n.handle_storage(
        t(4),
        local[0].0,
        StorageResult::Applied(Ok(ApplyOutcome::Kept { replaced: None })),
    );
    assert!(replies(&drain(&mut n)).is_empty());
    assert_eq!(n.in_flight(), 0);
}

#[test]
fn silent_replicas_give_a_typed_timeout_not_a_hang() {
    let mut n = node(1);
    drain(&mut n);
    n.handle_client(
        t(1),
        RequestId(1),
        ClientRequest::put("k", "v").with_consistency(Consistency::All),
    );
    let out = drain(&mut n);
    n.handle_storage(
        t(2),
        storage(&out)[0].0,
        StorageResult::Applied(Ok(ApplyOutcome::Kept { replaced: None })),
    );
    assert!(replies(&drain(&mut n)).is_empty());
    let deadline = n.poll_timeout().expect("a deadline is armed");
    assert!(deadline <= t(1) + Duration::from_secs(2));
    // Early calls are no-ops.
    n.handle_timeout(t(500));
    assert!(replies(&drain(&mut n)).is_empty());
    n.handle_timeout(t(1) + Duration::from_secs(2));
    let r = replies(&drain(&mut n));
    assert_eq!(
        r,
        vec![(
            RequestId(1),
            Err(ClientError::Timeout {
                acked: 1,
                needed: 3
            })
        )]
    );
}

#[test]
fn dead_replicas_give_unavailable_without_fan_out() {
    let mut n = node(1);
    // Nobody else speaks for far longer than the detector tolerates.
    let mut now = t(0);
    for _ in 0..30 {
        now = now + Duration::from_secs(1);
        n.handle_timeout(now);
    }
    let events = drain(&mut n);
    let downs = events
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Event(NodeEvent::Membership(
                    cassio_core::membership::MembershipEvent::Down(_)
                ))
            )
        })
        .count();
    assert_eq!(downs, 2);
    n.handle_client(now, RequestId(5), ClientRequest::get("k"));
    let out = drain(&mut n);
    assert!(
        sends(&out).is_empty() && storage(&out).is_empty(),
        "no fan-out: {out:?}"
    );
    assert_eq!(
        replies(&out),
        vec![(
            RequestId(5),
            Err(ClientError::Unavailable {
                needed: 2,
                alive: 1
            })
        )]
    );
    // ONE still works on the live local replica.
    n.handle_client(
        now,
        RequestId(6),
        ClientRequest::get("k").with_consistency(Consistency::One),
    );
    assert_eq!(storage(&drain(&mut n)).len(), 1);
}

#[test]
fn read_returns_newest_version_and_repairs_stale_replicas_after_answering() {
    let mut n = node(1);
    drain(&mut n);
    n.handle_client(t(1), RequestId(1), ClientRequest::get("k"));
    let out = drain(&mut n);
    let local = storage(&out)[0].0;
    let tag = match &sends(&out)[0].1 {
        PeerMsg::Read { tag, .. } => *tag,
        m => panic!("expected a read, got {m:?}"),
    };
    let old = Versioned::value(Timestamp::new(10, 0, NodeId(2)), "old");
    let tomb = Versioned::tombstone(Timestamp::new(20, 0, NodeId(3)));
    n.handle_storage(t(2), local, StorageResult::Got(Ok(Some(old.clone()))));
    n.handle_message(
        t(2),
        NodeId(3),
        PeerMsg::ReadReply {
            tag,
            result: Ok(Some(tomb.clone())),
        },
    );
    let out = drain(&mut n);
    // The tombstone is newer: the key reads as absent.
    assert_eq!(
        replies(&out),
        vec![(RequestId(1), Ok(ClientResponse::Value(None)))]
    );
    let repairs = storage(&out);
    assert_eq!(
        repairs.iter().map(|(_, op)| op.clone()).collect::<Vec<_>>(),
        vec![StorageOp::Apply {
            key: storage_key("default", b"k"),
            version: tomb.clone()
        }],
        "the stale local replica is repaired"
    );
    // The third replica answers late with nothing: it is repaired too.
    n.handle_message(
        t(3),
        NodeId(2),
        PeerMsg::ReadReply {
            tag,
            result: Ok(None),
        },
    );
    let out = drain(&mut n);
    assert!(replies(&out).is_empty());
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(2),
            PeerMsg::Repair {
                key: storage_key("default", b"k"),
                version: tomb
            }
        )]
    );
}

#[test]
fn replica_applies_writes_and_answers_after_storage_completes() {
    let mut n = node(2);
    drain(&mut n);
    let v = Versioned::value(
        Timestamp::new(WALL + 5_000_000, 0, NodeId(1)),
        Bytes::from_static(b"x"),
    );
    n.handle_message(
        t(1),
        NodeId(1),
        PeerMsg::Write {
            tag: 77,
            key: Bytes::from_static(b"sk"),
            version: v.clone(),
        },
    );
    let out = drain(&mut n);
    assert!(
        sends(&out).is_empty(),
        "no ack before the store has the write"
    );
    let ops = storage(&out);
    assert_eq!(
        ops[0].1,
        StorageOp::Apply {
            key: Bytes::from_static(b"sk"),
            version: v.clone()
        }
    );
    n.handle_storage(
        t(2),
        ops[0].0,
        StorageResult::Applied(Err("disk full".into())),
    );
    let out = drain(&mut n);
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(1),
            PeerMsg::WriteAck {
                tag: 77,
                outcome: WriteOutcome::Failed
            }
        )]
    );
    // The replica's clock moved past the coordinator's timestamp.
    n.handle_client(t(3), RequestId(1), ClientRequest::put("k", "y"));
    let out = drain(&mut n);
    let ts = storage(&out)
        .iter()
        .find_map(|(_, op)| match op {
            StorageOp::Apply { version, .. } => Some(version.ts),
            _ => None,
        })
        .expect("a local apply");
    assert!(ts > v.ts, "{ts} should be after {}", v.ts);
}

#[test]
fn bad_requests_and_strangers_get_typed_answers() {
    let mut n = node_with(1, |i| {
        let mut c = config(i);
        c.keyspaces.push(cassio_core::KeyspaceConfig {
            name: "small".into(),
            replication_factor: 2,
            default_consistency: Consistency::One,
            strategy: cassio_core::ReplicationStrategy::Leaderless,
            datacenters: Default::default(),
            spread_racks: false,
        });
        c
    });
    n.handle_client(
        t(1),
        RequestId(1),
        ClientRequest::get("k").in_keyspace("nope"),
    );
    n.handle_client(
        t(1),
        RequestId(2),
        ClientRequest::get("k")
            .in_keyspace("small")
            .with_consistency(Consistency::Three),
    );
    let r = replies(&drain(&mut n));
    assert_eq!(
        r,
        vec![
            (
                RequestId(1),
                Err(ClientError::UnknownKeyspace("nope".into()))
            ),
            (
                RequestId(2),
                Err(ClientError::InvalidConsistency {
                    level: Consistency::Three,
                    rf: 2
                })
            ),
        ]
    );
    // The small keyspace really places keys on two nodes.
    assert_eq!(n.replicas_of("small", b"k").len(), 2);
    n.handle_message(
        t(1),
        NodeId(99),
        PeerMsg::WriteAck {
            tag: 1,
            outcome: WriteOutcome::Applied,
        },
    );
    assert_eq!(
        drain(&mut n),
        vec![Output::Event(NodeEvent::UnknownPeer(NodeId(99)))]
    );
    n.handle_frame(t(1), b"\x01garbage");
    assert!(matches!(
        drain(&mut n).as_slice(),
        [Output::Event(NodeEvent::BadFrame(_))]
    ));
}

#[test]
fn failing_replicas_end_the_request_early_with_replica_failure() {
    let mut n = node(1);
    drain(&mut n);
    n.handle_client(t(1), RequestId(3), ClientRequest::put("k", "v"));
    let out = drain(&mut n);
    let tag = match &sends(&out)[0].1 {
        PeerMsg::Write { tag, .. } => *tag,
        m => panic!("{m:?}"),
    };
    n.handle_storage(
        t(2),
        storage(&out)[0].0,
        StorageResult::Applied(Err("io".into())),
    );
    n.handle_message(
        t(2),
        NodeId(2),
        PeerMsg::WriteAck {
            tag,
            outcome: WriteOutcome::Failed,
        },
    );
    let r = replies(&drain(&mut n));
    assert_eq!(
        r,
        vec![(
            RequestId(3),
            Err(ClientError::ReplicaFailure {
                acked: 0,
                failed: 2,
                needed: 2
            })
        )]
    );
}

#[test]
fn shutdown_fails_in_flight_and_new_requests() {
    let mut n = node(1);
    drain(&mut n);
    n.handle_client(t(1), RequestId(1), ClientRequest::get("k"));
    drain(&mut n);
    n.shutdown(t(2));
    n.handle_client(t(3), RequestId(2), ClientRequest::get("k"));
    let r = replies(&drain(&mut n));
    assert_eq!(
        r,
        vec![
            (RequestId(1), Err(ClientError::ShuttingDown)),
            (RequestId(2), Err(ClientError::ShuttingDown))
        ]
    );
}

fn write_tag(msg: &PeerMsg) -> (u64, Timestamp) {
    match msg {
        PeerMsg::Write { tag, version, .. } => (*tag, version.ts),
        m => panic!("expected a write, got {m:?}"),
    }
}

#[test]
fn a_superseded_write_is_restamped_above_the_newer_version() {
    let mut n = node(1);
    n.handle_client(t(1), RequestId(1), ClientRequest::put("k", "v2"));
    let out = drain(&mut n);
    let local = storage(&out);
    let remote = sends(&out);
    let (tag, ts) = write_tag(&remote[0].1);
    // Replica 2 holds a version stamped 5 s ahead (a skewed coordinator
    // wrote it before this write began): it must not win.
    let newer = Timestamp::new(ts.micros + 400_000, 0, NodeId(3));
    n.handle_message(
        t(2),
        NodeId(2),
        PeerMsg::WriteAck {
            tag,
            outcome: WriteOutcome::Superseded(newer),
        },
    );
    let out = drain(&mut n);
    assert!(replies(&out).is_empty(), "a superseded ack is not an ack");
    let resent = sends(&out);
    assert_eq!(resent.len(), 2, "re-sent to both remote replicas: {out:?}");
    let (tag2, ts2) = write_tag(&resent[0].1);
    assert_ne!(
        tag2, tag,
        "a fresh tag, so late acks of the old stamp match nothing"
    );
    assert!(
        ts2 > newer,
        "re-stamped above the newer version: {ts2} vs {newer}"
    );
    assert_eq!(storage(&out).len(), 1, "and applied locally again");
    // Late acks of the first stamp count for nothing.
    n.handle_storage(
        t(3),
        local[0].0,
        StorageResult::Applied(Ok(ApplyOutcome::Kept { replaced: None })),
    );
    n.handle_message(
        t(3),
        NodeId(3),
        PeerMsg::WriteAck {
            tag,
            outcome: WriteOutcome::Applied,
        },
    );
    assert!(replies(&drain(&mut n)).is_empty());
    for r in [2, 3] {
        n.handle_message(
            t(4),
            NodeId(r),
            PeerMsg::WriteAck {
                tag: tag2,
                outcome: WriteOutcome::Applied,
            },
        );
    }
    let rs = replies(&drain(&mut n));
    assert_eq!(
        rs,
        vec![(RequestId(1), Ok(ClientResponse::Written { ts: ts2 }))]
    );
}

#[test]
fn a_replica_reports_the_newer_stamp_it_kept() {
    let mut n = node(2);
    let key = storage_key("default", b"k");
    let old = Timestamp::new(WALL + 1, 0, NodeId(1));
    n.handle_message(
        t(1),
        NodeId(1),
        PeerMsg::Write {
            tag: 5,
            key: key.clone(),
            version: Versioned::value(old, "old"),
        },
    );
    let st = storage(&drain(&mut n));
    n.handle_storage(
        t(2),
        st[0].0,
        StorageResult::Applied(Ok(ApplyOutcome::Superseded)),
    );
    let st = storage(&drain(&mut n));
    assert_eq!(
        st[0].1,
        StorageOp::Get { key: key.clone() },
        "it reads the kept version"
    );
    let kept = Timestamp::new(WALL + 9, 0, NodeId(3));
    n.handle_storage(
        t(3),
        st[0].0,
        StorageResult::Got(Ok(Some(Versioned::value(kept, "new")))),
    );
    assert_eq!(
        sends(&drain(&mut n)),
        vec![(
            NodeId(1),
            PeerMsg::WriteAck {
                tag: 5,
                outcome: WriteOutcome::Superseded(kept)
            }
        )]
    );
}

#[test]
fn a_write_stamped_beyond_the_clock_bound_is_refused_and_not_observed() {
    let mut n = node(2);
    let key = storage_key("default", b"k");
    // An hour ahead of every clock in the cluster.
    let far = Timestamp::new(WALL + 3_600_000_000, 0, NodeId(1));
    n.handle_message(
        t(1),
        NodeId(1),
        PeerMsg::Write {
            tag: 6,
            key,
            version: Versioned::value(far, "future"),
        },
    );
    let out = drain(&mut n);
    assert!(storage(&out).is_empty(), "not applied: {out:?}");
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(1),
            PeerMsg::WriteAck {
                tag: 6,
                outcome: WriteOutcome::ClockAhead
            }
        )]
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(NodeEvent::ClockAheadRefused {
            from: NodeId(1),
            ..
        })
    )));
    // The clock did not move: this node's next write is stamped near now.
    n.handle_client(t(2), RequestId(2), ClientRequest::put("k", "v"));
    let (_, ts) = write_tag(&sends(&drain(&mut n))[0].1);
    assert!(ts.micros < WALL + 60_000_000, "clock dragged to {ts}");
}

#[test]
fn a_replica_set_smaller_than_the_replication_factor_is_unavailable() {
    // One node alone with RF 3 must not acknowledge a "quorum" of one.
    let mut c = Config::new("test", addr(1));
    c.keyspaces = vec![cassio_core::KeyspaceConfig::default_keyspace(3)];
    let mut n = Node::new(NodeId(1), c, Instant::ZERO, WALL).expect("config");
    drain(&mut n);
    n.handle_client(
        t(1),
        RequestId(3),
        ClientRequest::put("k", "v").with_consistency(Consistency::One),
    );
    let out = drain(&mut n);
    assert!(
        storage(&out).is_empty() && sends(&out).is_empty(),
        "nothing sent: {out:?}"
    );
    assert!(matches!(
        replies(&out)[..],
        [(RequestId(3), Err(ClientError::Unavailable { .. }))]
    ));
}

#[test]
fn a_node_with_another_replication_factor_refuses_to_coordinate() {
    let mut odd = node_with(3, |i| {
        let mut c = config(i);
        if i == 3 {
            c.keyspaces = vec![cassio_core::KeyspaceConfig::default_keyspace(1)];
        }
        c
    });
    odd.handle_client(t(1), RequestId(4), ClientRequest::put("k", "v"));
    let out = drain(&mut odd);
    assert!(storage(&out).is_empty() && sends(&out).is_empty());
    match &replies(&out)[..] {
        [(
            _,
            Err(ClientError::ConfigMismatch {
                setting,
                ours,
                theirs,
                ..
            }),
        )] => {
            assert_eq!(
                (setting.as_str(), ours.as_str(), theirs.as_str()),
                ("replication_factor", "1", "3")
            );
        }
        r => panic!("expected a config mismatch, got {r:?}"),
    }
    // The two that agree keep serving.
    let mut ok = node_with(1, |i| {
        let mut c = config(i);
        if i == 3 {
            c.keyspaces = vec![cassio_core::KeyspaceConfig::default_keyspace(1)];
        }
        c
    });
    ok.handle_client(t(1), RequestId(5), ClientRequest::put("k", "v"));
    assert!(
        replies(&drain(&mut ok)).is_empty(),
        "the write is in flight"
    );
}

#[test]
fn too_many_vnodes_for_a_gossip_message_is_a_config_error() {
    let mut c = Config::new("test", addr(1));
    c.vnodes = 6000;
    assert!(matches!(
        Node::new(NodeId(1), c, Instant::ZERO, WALL),
        Err(cassio_core::node::ConfigError::TooManyVnodes { vnodes: 6000, .. })
    ));
    let mut c = Config::new("test", addr(1));
    c.vnodes = 4000;
    assert!(Node::new(NodeId(1), c, Instant::ZERO, WALL).is_ok());
}

fn persisted_of(out: &[Output]) -> Option<cassio_core::PersistedState> {
    out.iter().rev().find_map(|o| match o {
        Output::Persist(p) => Some(p.clone()),
        _ => None,
    })
}

#[test]
fn a_restart_waits_for_a_majority_of_its_persisted_view_and_its_clock() {
    let mut first = node(1);
    // Drive a write so the clock moves, then collect the state to persist.
    first.handle_client(t(1), RequestId(1), ClientRequest::put("k", "v"));
    let mut state = persisted_of(&drain(&mut first));
    first.handle_timeout(t(2000));
    if let Some(p) = persisted_of(&drain(&mut first)) {
        state = Some(p);
    }
    let state = state.expect("the node persists its view and clock");
    assert_eq!(state.members.len(), 2, "both peers persisted: {state:?}");
    assert!(state.clock_high_water > WALL);

    // Restart as a seed (no one to join through), wall clock a little
    // behind the persisted high-water mark.
    let mut c = Config::new("test", addr(1));
    c.persisted = Some(state.clone());
    let wall = state.clock_high_water - 300_000;
    let mut n = Node::new(NodeId(1), c, Instant::ZERO, wall).expect("config");
    assert!(
        !n.is_ready(),
        "a seed restart must not serve on an empty view"
    );
    assert_eq!(
        n.replicas_of("default", b"k").len(),
        3,
        "the ring is whole at once"
    );
    n.handle_client(
        Instant::from_micros(1),
        RequestId(2),
        ClientRequest::get("k"),
    );
    assert!(matches!(
        replies(&drain(&mut n))[..],
        [(_, Err(ClientError::Joining))]
    ));
    // Hearing from one of two peers makes 2 of 3: a majority, but the
    // wall clock has not passed the high-water mark yet.
    let syn = cassio_core::membership::GossipMsg::Syn {
        reply_to: addr(2),
        digests: vec![],
        wall_micros: wall,
    };
    let mut peer2 = state
        .members
        .iter()
        .find(|m| m.id == NodeId(2))
        .cloned()
        .expect("n2");
    peer2.generation += 1;
    let ack2 = cassio_core::membership::GossipMsg::Ack2 {
        states: vec![cassio_core::membership::NodeState {
            id: NodeId(2),
            generation: peer2.generation,
            version: 5,
            app_version: 1,
            app: Some(cassio_core::membership::AppState {
                status: cassio_core::NodeStatus::Normal,
                addr: peer2.addr,
                tokens: peer2.tokens.clone(),
                keyspaces: vec![cassio_core::KeyspaceConfig::default_keyspace(3)],
                load: 0,
                repaired_through: 0,
                repaired_schema: 0,
                hinting: Vec::new(),
                ring_acked: 0,
                ring_synced: 0,
                removing: Vec::new(),
                removed: Vec::new(),
                datacenter: "dc1".into(),
                rack: "rack1".into(),
                client_addr: None,
            }),
        }],
    };
    n.handle_message(Instant::from_micros(2), NodeId(2), PeerMsg::Gossip(syn));
    n.handle_message(Instant::from_micros(3), NodeId(2), PeerMsg::Gossip(ack2));
    drain(&mut n);
    assert!(n.membership().is_alive(NodeId(2)));
    assert!(!n.is_ready(), "clock still behind the high-water mark");
    n.handle_timeout(Instant::from_micros(400_000));
    assert!(n.is_ready(), "majority heard and clock past the mark");
    n.handle_client(
        Instant::from_micros(400_001),
        RequestId(3),
        ClientRequest::put("k", "w"),
    );
    let out = drain(&mut n);
    let ts = sends(&out)
        .iter()
        .find_map(|(_, m)| match m {
            PeerMsg::Write { version, .. } => Some(version.ts),
            _ => None,
        })
        .expect("a write to the live peer");
    assert!(
        ts.micros > state.clock_high_water,
        "stamped above everything before the crash"
    );
}

#[test]
fn a_restart_behind_a_clock_step_back_still_gets_a_larger_generation() {
    let first = Node::new(NodeId(1), config(1), Instant::ZERO, WALL).expect("config");
    let g1 = first.membership().generation();
    let mut c = config(1);
    c.persisted = Some(cassio_core::PersistedState {
        clock_high_water: WALL,
        generation: g1,
        members: Vec::new(),
        alive_micros: WALL,
        ..Default::default()
    });
    // The wall clock stepped 20 s back across the restart.
    let again = Node::new(NodeId(1), c, Instant::ZERO, WALL - 20_000_000).expect("config");
    assert!(again.membership().generation() > g1);
}

#[test]
fn a_replica_refuses_keys_it_holds_on_neither_ring() {
    // RF 1 over three nodes: each key has one owner. A coordinator whose
    // view is behind sends node 2 a key another node owns: node 2 must not
    // apply it or answer a read of it, or a stale coordinator could count
    // it toward a quorum that reads never ask.
    let mut n = node_with(2, |i| {
        let mut c = config(i);
        c.keyspaces = vec![cassio_core::config::KeyspaceConfig::default_keyspace(1)];
        c
    });
    let owner_of = |n: &Node, k: &str| n.replicas_of("default", k.as_bytes());
    let foreign = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| owner_of(&n, k) == vec![NodeId(1)])
        .expect("a key node 1 owns");
    let own = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| owner_of(&n, k) == vec![NodeId(2)])
        .expect("a key node 2 owns");
    let v = Versioned::value(
        Timestamp::new(WALL + 5_000_000, 0, NodeId(1)),
        Bytes::from_static(b"x"),
    );
    let write = |key: &str, tag: u64| PeerMsg::Write {
        tag,
        key: storage_key("default", key.as_bytes()),
        version: v.clone(),
    };
    n.handle_message(t(1), NodeId(1), write(&foreign, 5));
    let out = drain(&mut n);
    assert!(
        storage(&out).is_empty(),
        "applied a key it does not hold: {out:?}"
    );
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(1),
            PeerMsg::WriteAck {
                tag: 5,
                outcome: WriteOutcome::NotOwner
            }
        )]
    );
    n.handle_message(
        t(2),
        NodeId(1),
        PeerMsg::Read {
            tag: 6,
            key: storage_key("default", foreign.as_bytes()),
        },
    );
    let out = drain(&mut n);
    assert!(
        storage(&out).is_empty(),
        "read a key it does not hold: {out:?}"
    );
    assert_eq!(
        sends(&out),
        vec![(
            NodeId(1),
            PeerMsg::ReadReply {
                tag: 6,
                result: Err(())
            }
        )]
    );
    // A key it holds is applied as before.
    n.handle_message(t(3), NodeId(1), write(&own, 7));
    let out = drain(&mut n);
    assert_eq!(
        storage(&out).len(),
        1,
        "a key it holds was not applied: {out:?}"
    );
}

/// A `WriteAck` nobody waits for: a message with no effect of its own,
/// to carry a schema version in its envelope.
fn idle_envelope(from: u64, layout: u64) -> cassio_core::wire::Envelope {
    cassio_core::wire::Envelope {
        cluster: "test".into(),
        from: NodeId(from),
        layout,
        msg: PeerMsg::WriteAck {
            tag: 12_345,
            outcome: WriteOutcome::Applied,
        },
    }
}

#[test]
fn a_node_behind_a_members_layout_fetches_it_and_coordinates_nothing_until_then() {
    let mut n = node(1);
    let own = n.schema().version;
    // A stranger's claim of a newer layout changes nothing: it cannot be
    // fetched from a non-member, and must not stall the node.
    n.handle_envelope(t(1), idle_envelope(99, own + 5));
    drain(&mut n);
    n.handle_client(t(2), RequestId(1), ClientRequest::put("k", "v"));
    let out = drain(&mut n);
    assert!(replies(&out).is_empty(), "{out:?}");
    assert!(
        sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, PeerMsg::Write { .. })),
        "the write was not sent: {out:?}"
    );
    // A member's newer layout: the node asks that member for it and,
    // until it has it, refuses to coordinate (a retryable `Joining`).
    n.handle_envelope(t(3), idle_envelope(2, own + 1));
    let out = drain(&mut n);
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == NodeId(2) && matches!(m, PeerMsg::Schema(_))),
        "no fetch from node 2: {out:?}"
    );
    n.handle_client(t(4), RequestId(2), ClientRequest::get("k"));
    let out = drain(&mut n);
    assert_eq!(
        replies(&out),
        vec![(RequestId(2), Err(ClientError::Joining))],
        "{out:?}"
    );
    assert!(
        !sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, PeerMsg::Read { .. })),
        "a node behind sent a read: {out:?}"
    );
}
