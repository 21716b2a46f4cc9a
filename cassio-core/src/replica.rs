//! The replica: how this node answers the writes, reads and read repairs
//! that other nodes coordinate.
//!
//! It holds no state of its own: a write or repair whose stamp is within
//! the clock bound goes to the store, one beyond it is refused (and the
//! clock not moved); the store's answer becomes the reply to the
//! coordinator. Everything it wants done comes out, in order, as
//! [`ReplicaEffect`]s that the node carries out.

use crate::clock_guard::Stamper;
use crate::output::NodeEvent;
use crate::storage_ops::{StorageOp, StorageResult};
use crate::store::ApplyOutcome;
use crate::time::Instant;
use crate::types::{Key, NodeId, Timestamp, Versioned};
use crate::wire::{PeerMsg, RequestTag, WriteOutcome};

/// Who waits for a storage operation the replica asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReplicaWaiter {
    /// Write `tag` of coordinator `to` being applied.
    Write {
        to: NodeId,
        tag: RequestTag,
        ts: Timestamp,
        key: Key,
    },
    /// The store kept a newer version: read it to learn its stamp.
    Superseded {
        to: NodeId,
        tag: RequestTag,
        ts: Timestamp,
    },
    /// Read `tag` of coordinator `to`.
    Read { to: NodeId, tag: RequestTag },
    /// A read repair (nothing to answer).
    Repair,
    /// Range read `tag` of coordinator `to` (a row's cells).
    ReadRange { to: NodeId, tag: RequestTag },
}

/// One thing the replica wants done; the node carries them out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReplicaEffect {
    /// Send a message to a coordinator.
    Send(NodeId, PeerMsg),
    /// Run an operation on this node's store.
    Storage(StorageOp, ReplicaWaiter),
    /// Something worth logging.
    Event(NodeEvent),
}

/// Observes `ts` from coordinator `from` on this node's clock; a stamp
/// beyond the clock bound is refused (and reported): false then.
fn observe_or_refuse(
    now: Instant,
    from: NodeId,
    ts: Timestamp,
    clock: &mut dyn Stamper,
    fx: &mut Vec<ReplicaEffect>,
) -> bool {
    match clock.observe(now, ts) {
        Ok(()) => true,
        Err(ahead_micros) => {
            fx.push(ReplicaEffect::Event(NodeEvent::ClockAheadRefused {
                from,
                ahead_micros,
            }));
            false
        }
    }
}

/// Coordinator `from` asks this node to apply `version` of `key` (write `tag`).
pub(crate) fn on_write(
    now: Instant,
    from: NodeId,
    tag: RequestTag,
    key: Key,
    version: Versioned,
    clock: &mut dyn Stamper,
    fx: &mut Vec<ReplicaEffect>,
) {
    if !observe_or_refuse(now, from, version.ts, clock, fx) {
        fx.push(ReplicaEffect::Send(
            from,
            PeerMsg::WriteAck {
                tag,
                outcome: WriteOutcome::ClockAhead,
            },
        ));
    } else {
        let ts = version.ts;
        fx.push(ReplicaEffect::Storage(
            StorageOp::Apply {
                key: key.clone(),
                version,
            },
            ReplicaWaiter::Write {
                to: from,
                tag,
                ts,
                key,
            },
        ));
    }
}

/// Coordinator `from` asks this node for its version of `key` (read `tag`).
pub(crate) fn on_read(from: NodeId, tag: RequestTag, key: Key, fx: &mut Vec<ReplicaEffect>) {
    fx.push(ReplicaEffect::Storage(
        StorageOp::Get { key },
        ReplicaWaiter::Read { to: from, tag },
    ));
}

/// Coordinator `from` asks for this node's items in `start..end` (a
/// row's cells), at most `limit` of them.
pub(crate) fn on_read_range(
    from: NodeId,
    tag: RequestTag,
    start: Key,
    end: Key,
    limit: usize,
    fx: &mut Vec<ReplicaEffect>,
) {
    fx.push(ReplicaEffect::Storage(
        StorageOp::Range {
            start: std::ops::Bound::Included(start),
            end: std::ops::Bound::Excluded(end),
            limit,
        },
        ReplicaWaiter::ReadRange { to: from, tag },
    ));
}

/// Coordinator `from` repairs this node's `key` with `version`.
pub(crate) fn on_repair(
    now: Instant,
    from: NodeId,
    key: Key,
    version: Versioned,
    clock: &mut dyn Stamper,
    fx: &mut Vec<ReplicaEffect>,
) {
    if observe_or_refuse(now, from, version.ts, clock, fx) {
        fx.push(ReplicaEffect::Storage(
            StorageOp::Apply { key, version },
            ReplicaWaiter::Repair,
        ));
    }
}

/// A storage operation the replica asked for completed: answer the
/// coordinator.
pub(crate) fn storage_done(
    waiter: ReplicaWaiter,
    result: StorageResult,
    fx: &mut Vec<ReplicaEffect>,
) {
    let ack = |to, tag, outcome| ReplicaEffect::Send(to, PeerMsg::WriteAck { tag, outcome });
    let effect = match (waiter, result) {
        (ReplicaWaiter::Write { to, tag, ts, key }, StorageResult::Applied(r)) => match r {
            Ok(ApplyOutcome::Kept { .. }) => ack(to, tag, WriteOutcome::Applied),
            Ok(ApplyOutcome::Superseded) => ReplicaEffect::Storage(
                StorageOp::Get { key },
                ReplicaWaiter::Superseded { to, tag, ts },
            ),
            Err(_) => ack(to, tag, WriteOutcome::Failed),
        },
        (ReplicaWaiter::Superseded { to, tag, ts }, StorageResult::Got(r)) => {
            ack(to, tag, superseded_outcome(ts, r))
        }
        (ReplicaWaiter::Read { to, tag }, StorageResult::Got(r)) => ReplicaEffect::Send(
            to,
            PeerMsg::ReadReply {
                tag,
                result: r.map_err(|_| ()),
            },
        ),
        (ReplicaWaiter::ReadRange { to, tag }, StorageResult::Ranged(r)) => ReplicaEffect::Send(
            to,
            PeerMsg::RangeReply {
                tag,
                result: r.map_err(|_| ()),
            },
        ),
        (ReplicaWaiter::ReadRange { to, tag }, _) => ReplicaEffect::Send(
            to,
            PeerMsg::RangeReply {
                tag,
                result: Err(()),
            },
        ),
        (ReplicaWaiter::Repair, _) => return,
        // A host that answers an Apply with Got (or the reverse) broke the
        // contract; treat it as a failed operation rather than guess.
        (ReplicaWaiter::Write { to, tag, .. } | ReplicaWaiter::Superseded { to, tag, .. }, _) => {
            ack(to, tag, WriteOutcome::Failed)
        }
        (ReplicaWaiter::Read { to, tag }, _) => ReplicaEffect::Send(
            to,
            PeerMsg::ReadReply {
                tag,
                result: Err(()),
            },
        ),
    };
    fx.push(effect);
}

/// What a replica answers when its store kept a newer version than `ts`:
/// the stored version's stamp, or `Applied` if it is this very write (a
/// duplicate delivery).
pub(crate) fn superseded_outcome(
    ts: Timestamp,
    stored: Result<Option<Versioned>, String>,
) -> WriteOutcome {
    match stored {
        Ok(Some(v)) if v.ts > ts => WriteOutcome::Superseded(v.ts),
        Ok(Some(v)) if v.ts == ts => WriteOutcome::Applied,
        // Equal-or-older stamp yet not kept, or gone: the store contradicts
        // itself; do not count it.
        Ok(_) | Err(_) => WriteOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const COORD: NodeId = NodeId(2);
    const MAX: u64 = 500_000;

    /// A clock at `0` micros that refuses stamps more than MAX ahead.
    struct TestClock(u64);

    impl Stamper for TestClock {
        fn stamp(&mut self, _now: Instant) -> Timestamp {
            self.0 += 1;
            Timestamp::new(self.0, 0, NodeId(1))
        }
        fn observe(&mut self, _now: Instant, ts: Timestamp) -> Result<(), u64> {
            let limit = self.0 + MAX;
            if ts.micros > limit {
                return Err(ts.micros - limit);
            }
            self.0 = self.0.max(ts.micros);
            Ok(())
        }
        fn max_offset(&self) -> u64 {
            MAX
        }
        fn hlc_micros(&self, _now: Instant) -> u64 {
            0
        }
    }

    fn version(micros: u64) -> Versioned {
        Versioned {
            ts: Timestamp::new(micros, 0, COORD),
            value: Some(Bytes::from_static(b"v")),
            expires: None,
        }
    }

    fn key() -> Key {
        Bytes::from_static(b"k")
    }

    #[test]
    fn a_write_within_the_bound_is_applied_then_acknowledged() {
        let mut clock = TestClock(1_000_000);
        let mut fx = Vec::new();
        on_write(
            Instant::ZERO,
            COORD,
            9,
            key(),
            version(1_200_000),
            &mut clock,
            &mut fx,
        );
        let [ReplicaEffect::Storage(StorageOp::Apply { .. }, waiter)] = fx.as_slice() else {
            panic!("expected one Apply, got {fx:?}");
        };
        assert_eq!(clock.0, 1_200_000, "the clock did not move past the write");
        let mut fx = Vec::new();
        storage_done(
            waiter.clone(),
            StorageResult::Applied(Ok(ApplyOutcome::Kept { replaced: None })),
            &mut fx,
        );
        assert_eq!(
            fx,
            vec![ReplicaEffect::Send(
                COORD,
                PeerMsg::WriteAck {
                    tag: 9,
                    outcome: WriteOutcome::Applied
                }
            )]
        );
    }

    #[test]
    fn a_write_beyond_the_clock_bound_is_refused_unapplied() {
        let mut clock = TestClock(1_000_000);
        let mut fx = Vec::new();
        on_write(
            Instant::ZERO,
            COORD,
            9,
            key(),
            version(1_600_000),
            &mut clock,
            &mut fx,
        );
        assert_eq!(
            fx,
            vec![
                ReplicaEffect::Event(NodeEvent::ClockAheadRefused {
                    from: COORD,
                    ahead_micros: 100_000
                }),
                ReplicaEffect::Send(
                    COORD,
                    PeerMsg::WriteAck {
                        tag: 9,
                        outcome: WriteOutcome::ClockAhead
                    }
                )
            ]
        );
        assert_eq!(clock.0, 1_000_000);
    }

    #[test]
    fn a_superseded_write_answers_with_the_stored_stamp() {
        let mut fx = Vec::new();
        let waiter = ReplicaWaiter::Write {
            to: COORD,
            tag: 3,
            ts: version(10).ts,
            key: key(),
        };
        storage_done(
            waiter,
            StorageResult::Applied(Ok(ApplyOutcome::Superseded)),
            &mut fx,
        );
        let [ReplicaEffect::Storage(StorageOp::Get { .. }, waiter)] = fx.as_slice() else {
            panic!("expected a read of the stored version, got {fx:?}");
        };
        let mut fx2 = Vec::new();
        storage_done(
            waiter.clone(),
            StorageResult::Got(Ok(Some(version(20)))),
            &mut fx2,
        );
        assert_eq!(
            fx2,
            vec![ReplicaEffect::Send(
                COORD,
                PeerMsg::WriteAck {
                    tag: 3,
                    outcome: WriteOutcome::Superseded(version(20).ts)
                }
            )]
        );
        // The same stamp stored: a duplicate delivery of this very write.
        assert_eq!(
            superseded_outcome(version(10).ts, Ok(Some(version(10)))),
            WriteOutcome::Applied
        );
    }

    #[test]
    fn a_read_answers_with_the_store_or_with_a_failure() {
        let mut fx = Vec::new();
        on_read(COORD, 4, key(), &mut fx);
        let [ReplicaEffect::Storage(StorageOp::Get { .. }, waiter)] = fx.as_slice() else {
            panic!("expected a Get, got {fx:?}");
        };
        let mut ok = Vec::new();
        storage_done(waiter.clone(), StorageResult::Got(Ok(None)), &mut ok);
        assert_eq!(
            ok,
            vec![ReplicaEffect::Send(
                COORD,
                PeerMsg::ReadReply {
                    tag: 4,
                    result: Ok(None)
                }
            )]
        );
        let mut failed = Vec::new();
        storage_done(
            waiter.clone(),
            StorageResult::Got(Err("disk".into())),
            &mut failed,
        );
        assert_eq!(
            failed,
            vec![ReplicaEffect::Send(
                COORD,
                PeerMsg::ReadReply {
                    tag: 4,
                    result: Err(())
                }
            )]
        );
    }
}
