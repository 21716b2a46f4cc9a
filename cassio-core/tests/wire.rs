//! The wire format: round trips, typed refusals, and no panics on garbage.

use bytes::Bytes;
use cassio_core::anti_entropy::{SyncMsg, TreeReply};
use cassio_core::hints::HintMsg;
use cassio_core::membership::{AppState, Digest, GossipMsg, NodeState, NodeStatus};
use cassio_core::schema::{Schema, SchemaChange};
use cassio_core::schema_agreement::{Ballot, SchemaMsg};
use cassio_core::wire::{WireCodec, WireError, WIRE_VERSION};
use cassio_core::{KeyDigest, NodeId, PeerMsg, Timestamp, Token, Versioned, WriteOutcome};
use proptest::prelude::*;

fn samples() -> Vec<PeerMsg> {
    let ts = Timestamp::new(1_700_000_000_000_000, 3, NodeId(2));
    vec![
        PeerMsg::Write {
            tag: 1,
            key: Bytes::from_static(b"\x07defaultk"),
            version: Versioned::value(ts, "v"),
        },
        PeerMsg::Write {
            tag: 2,
            key: Bytes::new(),
            version: Versioned::tombstone(ts),
        },
        PeerMsg::WriteAck {
            tag: u64::MAX,
            outcome: WriteOutcome::Failed,
        },
        PeerMsg::WriteAck {
            tag: 2,
            outcome: WriteOutcome::Superseded(ts),
        },
        PeerMsg::WriteAck {
            tag: 1,
            outcome: WriteOutcome::ClockAhead,
        },
        PeerMsg::Read {
            tag: 3,
            key: Bytes::from(vec![0xff; 300]),
        },
        PeerMsg::ReadReply {
            tag: 4,
            result: Ok(Some(Versioned::value(ts, Bytes::from(vec![0u8; 70_000])))),
        },
        PeerMsg::ReadReply {
            tag: 5,
            result: Ok(None),
        },
        PeerMsg::ReadReply {
            tag: 6,
            result: Err(()),
        },
        PeerMsg::Repair {
            key: Bytes::from_static(b"k"),
            version: Versioned::value(ts, ""),
        },
        PeerMsg::Gossip(GossipMsg::Syn {
            reply_to: "127.0.0.1:7000".parse().expect("addr"),
            digests: vec![Digest {
                id: NodeId(1),
                generation: 9,
                version: 10,
            }],
            wall_micros: 1_700_000_000_000_000,
        }),
        PeerMsg::Gossip(GossipMsg::Ack {
            states: vec![NodeState {
                id: NodeId(2),
                generation: 3,
                version: 4,
                app_version: 2,
                app: Some(AppState {
                    status: NodeStatus::Leaving,
                    addr: "[::1]:9".parse().expect("addr"),
                    tokens: vec![Token(1), Token(u64::MAX)],
                    keyspaces: vec![cassio_core::KeyspaceConfig::default_keyspace(3)],
                    load: 6,
                    repaired_through: 7,
                    repaired_schema: 3,
                    hinting: vec![NodeId(8)],
                    ring_acked: 0,
                    ring_synced: 0,
                    removing: Vec::new(),
                    removed: Vec::new(),
                    datacenter: "dc1".into(),
                    rack: "rack1".into(),
                    client_addr: Some("127.0.0.1:7379".parse().expect("addr")),
                }),
            }],
            requests: vec![Digest {
                id: NodeId(3),
                generation: 0,
                version: 0,
            }],
            wall_micros: 0,
        }),
        PeerMsg::Gossip(GossipMsg::Ack2 { states: vec![] }),
        PeerMsg::Sync(SyncMsg::Tree {
            xid: 1,
            keyspace: "default".into(),
            branches: vec![u128::MAX; 256],
        }),
        PeerMsg::Sync(SyncMsg::TreeReply {
            xid: 1,
            reply: TreeReply::Segments(vec![(3, 4), (u16::MAX, 5)]),
        }),
        PeerMsg::Sync(SyncMsg::Keys {
            xid: 2,
            keyspace: "default".into(),
            start: Bytes::from_static(b"a"),
            after: true,
            end: Bytes::from_static(b"z"),
            limit: 4096,
            segments: vec![1, 2, u16::MAX],
        }),
        PeerMsg::Sync(SyncMsg::KeysReply {
            xid: 2,
            entries: vec![KeyDigest {
                key: Bytes::from_static(b"k"),
                ts: Timestamp::new(9, 1, NodeId(2)),
                tombstone: true,
                digest: 77,
            }],
            scanned_to: Some(Bytes::from_static(b"k")),
        }),
        PeerMsg::Sync(SyncMsg::Push {
            xid: 3,
            items: vec![(
                Bytes::from_static(b"k"),
                Versioned::value(Timestamp::new(9, 0, NodeId(1)), Bytes::from_static(b"v")),
            )],
            pull: vec![Bytes::from_static(b"p")],
        }),
        PeerMsg::Sync(SyncMsg::PushReply {
            xid: 3,
            items: vec![],
        }),
        PeerMsg::Sync(SyncMsg::Failed { xid: 4 }),
        PeerMsg::Hints(HintMsg::Batch {
            tag: 5,
            items: vec![(
                Bytes::from_static(b"k"),
                Versioned::tombstone(Timestamp::new(9, 0, NodeId(1))),
            )],
        }),
        PeerMsg::Hints(HintMsg::Ack { tag: 5, ok: true }),
        PeerMsg::Schema(SchemaMsg::Accept {
            slot: 2,
            ballot: Ballot {
                round: 4,
                node: NodeId(2),
            },
            value: Schema::seed(
                NodeId(2),
                &[(
                    "default".to_string(),
                    cassio_core::KeyspaceConfig::default_keyspace(3),
                )]
                .into_iter()
                .collect(),
            )
            .apply(
                &SchemaChange::Create {
                    name: "orders".into(),
                    replication_factor: 3,
                    default_consistency: cassio_core::Consistency::Quorum,
                },
                NodeId(2),
            )
            .expect("valid change"),
        }),
        PeerMsg::Schema(SchemaMsg::Fetch { have: 7 }),
    ]
}

#[test]
fn every_message_round_trips() {
    let codec = WireCodec::new("prod");
    for msg in samples() {
        let frame = codec.encode(NodeId(7), &msg).expect("encode");
        assert_eq!(frame[0], WIRE_VERSION);
        let env = codec.decode(&frame).expect("decode");
        assert_eq!(
            (env.from, env.cluster.as_str(), &env.msg),
            (NodeId(7), "prod", &msg)
        );
    }
}

#[test]
fn mismatches_and_oversize_are_refused_with_typed_errors() {
    let codec = WireCodec::new("prod");
    let frame = codec.encode(NodeId(1), &samples()[0]).expect("encode");
    let other = WireCodec::new("staging");
    assert!(matches!(
        other.decode(&frame),
        Err(WireError::ClusterMismatch { .. })
    ));
    let mut bumped = frame.clone();
    bumped[0] = WIRE_VERSION + 1;
    assert_eq!(
        codec.decode(&bumped),
        Err(WireError::Version {
            got: WIRE_VERSION + 1,
            want: WIRE_VERSION
        })
    );
    assert_eq!(codec.decode(&[]), Err(WireError::Empty));
    let mut small = WireCodec::new("prod");
    small.max_frame = 64;
    let big = samples()
        .into_iter()
        .find(|m| matches!(m, PeerMsg::Read { key, .. } if key.len() == 300))
        .expect("the 300-byte read sample");
    assert!(matches!(
        small.encode(NodeId(1), &big),
        Err(WireError::TooLarge { .. })
    ));
    let big_frame = codec.encode(NodeId(1), &big).expect("encode");
    assert!(matches!(
        small.decode(&big_frame),
        Err(WireError::TooLarge { .. })
    ));
    let mut trailing = frame.clone();
    trailing.push(0);
    assert!(matches!(
        codec.decode(&trailing),
        Err(WireError::Malformed(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let codec = WireCodec::new("prod");
        let _ = codec.decode(&bytes);
        // With a valid version byte the decoder reaches postcard too.
        let mut versioned = vec![WIRE_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = codec.decode(&versioned);
    }

    #[test]
    fn corrupting_a_valid_frame_never_panics(idx in 0usize..4096, byte in any::<u8>(), which in 0usize..64) {
        let codec = WireCodec::new("prod");
        let all = samples();
        let mut frame = codec.encode_at(NodeId(3), 5, &all[which % all.len()]).expect("encode");
        let i = idx % frame.len();
        frame[i] = byte;
        if let Ok(env) = codec.decode(&frame) {
            // Whatever decodes must re-encode to a frame that decodes the same.
            let again = codec.encode_at(env.from, env.layout, &env.msg).expect("re-encode");
            prop_assert_eq!(codec.decode(&again).expect("decode"), env);
        }
    }
}
