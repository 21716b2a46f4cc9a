//! The coordinator and replica, driven by hand through the sans-IO API.

use bytes::Bytes;
use cassio_core::config::{Config, Consistency};
use cassio_core::node::storage_key;
use cassio_core::{
    ClientError, ClientRequest, ClientResponse, Instant, Node, NodeEvent, NodeId, Output, PeerMsg,
    RequestId, StorageOp, StorageResult, Timestamp, Versioned,
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
    n.handle_message(t(2), NodeId(2), PeerMsg::WriteAck { tag, ok: true });
    n.handle_message(t(2), NodeId(2), PeerMsg::WriteAck { tag, ok: true });
    assert!(
        replies(&drain(&mut n)).is_empty(),
        "one distinct ack is not a quorum"
    );
    n.handle_storage(t(3), local[0].0, StorageResult::Applied(Ok(true)));
    let r = replies(&drain(&mut n));
    assert!(
        matches!(
            r.as_slice(),
            [(RequestId(9), Ok(ClientResponse::Written { .. }))]
        ),
        "{r:?}"
    );
    // A late ack and a replayed storage completion change nothing.
    n.handle_message(t(4), NodeId(3), PeerMsg::WriteAck { tag, ok: true });
    n.handle_storage(t(4), local[0].0, StorageResult::Applied(Ok(true)));
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
    n.handle_storage(t(2), storage(&out)[0].0, StorageResult::Applied(Ok(true)));
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
        vec![(NodeId(1), PeerMsg::WriteAck { tag: 77, ok: false })]
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
    n.handle_message(t(1), NodeId(99), PeerMsg::WriteAck { tag: 1, ok: true });
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
    n.handle_message(t(2), NodeId(2), PeerMsg::WriteAck { tag, ok: false });
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
