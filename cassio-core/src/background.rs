//! The routing of background storage completions: each completion of a
//! storage operation that anti-entropy or hinted handoff asked for goes
//! back to the machine (or the answer to a peer) its [`BgWaiter`] names.
//!
//! What the machines then ask for lands in their [`Effects`], which the node
//! drains into outputs after the completion, in order.

use crate::anti_entropy::{self, AntiEntropy, SyncMsg};
use crate::budget::ByteBudget;
use crate::effects::{AfterApply, BgWaiter, Effects};
use crate::hints::{HintMsg, Hints};
use crate::output::NodeEvent;
use crate::placement::Placement;
use crate::storage_ops::StorageResult;
use crate::time::Instant;
use crate::wire::PeerMsg;

/// The background machines and what they share, borrowed from the node.
pub(crate) struct Machines<'a> {
    /// Anti-entropy: trees, rounds, exchanges.
    pub ae: &'a mut AntiEntropy,
    /// Hinted handoff.
    pub hints: &'a mut Hints,
    /// The byte budget both share.
    pub budget: &'a mut ByteBudget,
    /// What they ask the node to do.
    pub fx: &'a mut Effects,
}

impl Machines<'_> {
    /// Routes the completion `result` of the operation `w` waited for, at
    /// monotonic time `now` and wall time `wall`, under `placement`.
    /// Returns the event to emit (before the effects) when the host answered
    /// with the wrong kind of result: it broke the contract, and the
    /// machines time out and retry.
    pub fn storage_done(
        &mut self,
        placement: &dyn Placement,
        now: Instant,
        wall: u64,
        w: BgWaiter,
        result: StorageResult,
    ) -> Option<NodeEvent> {
        match (w, result) {
            (BgWaiter::RebuildPage { keyspace, run }, StorageResult::Digests(r)) => {
                self.ae.on_rebuild_page(&keyspace, run, r, now)
            }
            (BgWaiter::OwnDigests { xid }, StorageResult::Digests(r)) => {
                self.ae
                    .on_own_digests(xid, r, now, wall, placement, self.budget, self.fx)
            }
            (BgWaiter::PushItems { xid, keys, pull }, StorageResult::GotBatch(r)) => self
                .ae
                .on_push_items(xid, keys, pull, r, now, wall, self.budget, self.fx),
            (BgWaiter::ApplyItems { then, .. }, StorageResult::AppliedBatch(r)) => match then {
                AfterApply::Nothing => {}
                AfterApply::SyncPush { to, xid, pull } => match r {
                    Ok(_) => anti_entropy::answer_pull(to, xid, pull, self.fx),
                    Err(_) => self.fx.send(to, PeerMsg::Sync(SyncMsg::Failed { xid })),
                },
                AfterApply::HintBatch { to, tag } => self
                    .fx
                    .send(to, PeerMsg::Hints(HintMsg::Ack { tag, ok: r.is_ok() })),
            },
            (
                BgWaiter::AnswerKeys {
                    to,
                    xid,
                    limit,
                    segments,
                },
                StorageResult::Digests(r),
            ) => {
                let msg = match r {
                    Ok(entries) => anti_entropy::keys_reply(xid, entries, limit, &segments),
                    Err(_) => SyncMsg::Failed { xid },
                };
                self.fx.send(to, PeerMsg::Sync(msg));
            }
            (BgWaiter::AnswerPull { to, xid, keys }, StorageResult::GotBatch(r)) => {
                let msg = match r {
                    Ok(values) => SyncMsg::PushReply {
                        xid,
                        items: keys
                            .into_iter()
                            .zip(values)
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .collect(),
                    },
                    Err(_) => SyncMsg::Failed { xid },
                };
                self.fx.send(to, PeerMsg::Sync(msg));
            }
            (BgWaiter::HintAppended { target, charge, .. }, StorageResult::HintAppended(r)) => {
                self.hints.on_appended(target, charge, r)
            }
            (BgWaiter::HintsRead { target }, StorageResult::HintsRead(r)) => {
                self.hints
                    .on_read(target, r, now, wall, self.budget, self.fx)
            }
            (BgWaiter::HintBacklog, StorageResult::HintBacklog(r)) => self.hints.on_backlog(r),
            (BgWaiter::HintsTrimmed | BgWaiter::Watermark, _) => {}
            (w, r) => {
                return Some(NodeEvent::StorageFailed(format!(
                    "storage answered {w:?} with {r:?}"
                )))
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::TokenRing;
    use crate::types::{NodeId, Timestamp, Versioned};
    use std::time::Duration;

    /// Runs one completion through fresh machines; returns the event and
    /// what the machines asked for.
    fn route(w: BgWaiter, result: StorageResult) -> (Option<NodeEvent>, Effects) {
        let now = Instant::from_micros(0);
        let mut ae = AntiEntropy::new(
            NodeId(1),
            Default::default(),
            Vec::<(String, usize)>::new(),
            now,
            1,
        );
        let mut hints = Hints::new(Default::default(), Duration::from_secs(3600), 1);
        let mut budget = ByteBudget::new(1 << 20, now);
        let mut fx = Effects::default();
        let event = Machines {
            ae: &mut ae,
            hints: &mut hints,
            budget: &mut budget,
            fx: &mut fx,
        }
        .storage_done(&TokenRing::default(), now, 0, w, result);
        (event, fx)
    }

    fn version(micros: u64) -> Versioned {
        Versioned {
            ts: Timestamp {
                micros,
                logical: 0,
                node: NodeId(2),
            },
            value: Some(bytes::Bytes::from_static(b"v")),
            expires: None,
        }
    }

    #[test]
    fn a_pull_is_answered_with_the_keys_found() {
        let keys = vec![
            bytes::Bytes::from_static(b"a"),
            bytes::Bytes::from_static(b"b"),
        ];
        let w = BgWaiter::AnswerPull {
            to: NodeId(2),
            xid: 7,
            keys,
        };
        let (event, fx) = route(w, StorageResult::GotBatch(Ok(vec![None, Some(version(5))])));
        assert_eq!(event, None);
        assert_eq!(
            fx.sends,
            vec![(
                NodeId(2),
                PeerMsg::Sync(SyncMsg::PushReply {
                    xid: 7,
                    items: vec![(bytes::Bytes::from_static(b"b"), version(5))],
                })
            )]
        );
    }

    #[test]
    fn a_failed_read_fails_the_peers_exchange() {
        let w = BgWaiter::AnswerKeys {
            to: NodeId(3),
            xid: 9,
            limit: 10,
            segments: vec![0],
        };
        let (event, fx) = route(w, StorageResult::Digests(Err("disk".to_string())));
        assert_eq!(event, None);
        assert_eq!(
            fx.sends,
            vec![(NodeId(3), PeerMsg::Sync(SyncMsg::Failed { xid: 9 }))]
        );
    }

    #[test]
    fn a_hint_batch_is_acknowledged_with_its_outcome() {
        for (result, ok) in [(Ok(Vec::new()), true), (Err("disk".to_string()), false)] {
            let w = BgWaiter::ApplyItems {
                items: Vec::new(),
                then: AfterApply::HintBatch {
                    to: NodeId(4),
                    tag: 11,
                },
            };
            let (event, fx) = route(w, StorageResult::AppliedBatch(result));
            assert_eq!(event, None);
            assert_eq!(
                fx.sends,
                vec![(NodeId(4), PeerMsg::Hints(HintMsg::Ack { tag: 11, ok }))]
            );
        }
    }

    #[test]
    fn a_result_of_the_wrong_kind_is_reported_and_routed_nowhere() {
        let (event, fx) = route(BgWaiter::HintBacklog, StorageResult::WatermarkSet);
        assert!(matches!(event, Some(NodeEvent::StorageFailed(_))));
        assert!(fx.sends.is_empty() && fx.storage.is_empty() && fx.events.is_empty());
    }
}
