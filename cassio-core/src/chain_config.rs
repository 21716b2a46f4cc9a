//! Which nodes form a key's chain in a chain-replicated (CRAQ) keyspace,
//! and what each must do when a chain changes (used by [`crate::chain`]).
//! The machine commits at the chain's last member, a syncing one when one
//! follows the serving tail ([`Chain::last`]).
//!
//! A key's chain is its replica list in ring order (placement is the
//! keyspace's, unchanged), filtered by the keyspace's [`ChainConfig`]:
//! members marked `Out` are left out, `Serving` ones form the chain from
//! head to tail, and `Syncing` ones (new or returning) follow the tail:
//! they take every committed write and serve no reads until promoted. The
//! configuration changes only by a new epoch of the agreed schema, so
//! every node derives the same chain for a key at a given epoch.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A member's state in a CRAQ keyspace's chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// In its chains, in ring order; serves reads (with a lease).
    Serving,
    /// After the tail of its chains: takes committed writes, catches up
    /// from its predecessor, serves no reads.
    Syncing,
    /// Left out of every chain (failed, or leaving).
    Out,
}

/// Why a chain configuration change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainConfigError {
    /// Every member would be out of the chains, or none left serving: no
    /// chain could commit a write.
    #[error("taking node {0} out would leave no serving member")]
    LastServing(NodeId),
    /// The change does not apply to the member's state.
    #[error("node {node} is {state:?}, not {wanted:?}")]
    WrongState {
        /// The member.
        node: NodeId,
        /// Its state.
        state: MemberState,
        /// The state the change needs.
        wanted: MemberState,
    },
}

/// One CRAQ keyspace's chain configuration at one epoch. Members it does
/// not name are `Serving`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainConfig {
    /// The schema version that last changed it: every chain message
    /// carries it.
    pub epoch: u64,
    states: BTreeMap<NodeId, MemberState>,
    /// The epoch each member last rejoined at (out → syncing): dirty
    /// versions it holds from before then are dropped.
    #[serde(default)]
    joined: BTreeMap<NodeId, u64>,
}

impl ChainConfig {
    /// Every member serving, at `epoch`.
    pub fn new(epoch: u64) -> Self {
        ChainConfig {
            epoch,
            states: BTreeMap::new(),
            joined: BTreeMap::new(),
        }
    }

    /// The chain of a key while the ring moves: `now` are its replicas on
    /// the current ring, `next` those on the ring the cluster moves to.
    /// Replicas only on the next ring follow, syncing (they take every
    /// write and pull what was committed before; reads stay with the
    /// current ring's serving members until the move completes).
    pub fn chain_moving(&self, now: &[NodeId], next: &[NodeId]) -> Chain {
        let mut chain = self.chain(now);
        chain.syncing.extend(
            next.iter()
                .copied()
                .filter(|n| !now.contains(n) && self.state(*n) != MemberState::Out),
        );
        chain
    }

    /// Member `node`'s state.
    pub fn state(&self, node: NodeId) -> MemberState {
        self.states
            .get(&node)
            .copied()
            .unwrap_or(MemberState::Serving)
    }

    /// Records that `node` came into its chains at `epoch` other than by
    /// rejoining (a ring move made it a current owner): it serves behind
    /// the members that were there before it, as a rejoined member does.
    ///
    /// It starts `Syncing`, as a rejoining member does: it pulls what its
    /// chains committed and serves once the claimant promotes it (a ring
    /// move can make a node a current owner before its own pull finished,
    /// e.g. when it restarted mid-move).
    pub fn mark_joined(&mut self, node: NodeId, epoch: u64) {
        self.joined.insert(node, epoch);
        self.states.insert(node, MemberState::Syncing);
    }

    /// The cluster's first CRAQ keyspace is created at `epoch`: no chain
    /// held data before it, so members syncing have nothing to pull and
    /// none came later than another. They serve at once (out members
    /// stay out), under a new epoch if that changed anything.
    pub fn first_keyspace(&mut self, epoch: u64) {
        let before = (self.states.len(), self.joined.len());
        self.states.retain(|_, s| *s == MemberState::Out);
        self.joined.clear();
        if before != (self.states.len(), self.joined.len()) {
            self.epoch = epoch;
        }
    }

    /// The epoch `node` last rejoined at (0: never).
    pub fn joined_at(&self, node: NodeId) -> u64 {
        self.joined.get(&node).copied().unwrap_or(0)
    }

    /// Members not serving, with their states.
    pub fn not_serving(&self) -> impl Iterator<Item = (NodeId, MemberState)> + '_ {
        self.states.iter().map(|(n, s)| (*n, *s))
    }

    /// The chain of a key whose replicas, in ring order, are `replicas`.
    ///
    /// Serving members are in ring order, except that members that
    /// rejoined come after those that did not, in the order they rejoined:
    /// a member joins at the tail and stays behind every member that was
    /// there before it (as chain replication adds members). Put back in
    /// ring order, a rejoined member could become a head lacking dirty
    /// versions its successors hold, and give their numbers to other
    /// writes.
    pub fn chain(&self, replicas: &[NodeId]) -> Chain {
        let pick = |s| -> Vec<NodeId> {
            replicas
                .iter()
                .copied()
                .filter(|&n| self.state(n) == s)
                .collect()
        };
        let mut serving = pick(MemberState::Serving);
        // Stable: ring order among members that rejoined at one epoch (or
        // never).
        serving.sort_by_key(|&n| self.joined_at(n));
        Chain {
            serving,
            syncing: pick(MemberState::Syncing),
        }
    }

    /// The next epoch's configuration with `node` out of every chain
    /// (failed or leaving). `members` are the keyspace's token owners: at
    /// least one must stay serving.
    pub fn take_out(
        &self,
        node: NodeId,
        members: &[NodeId],
        epoch: u64,
    ) -> Result<ChainConfig, ChainConfigError> {
        let serving_left = members
            .iter()
            .filter(|&&m| m != node && self.state(m) == MemberState::Serving)
            .count();
        if serving_left == 0 {
            return Err(ChainConfigError::LastServing(node));
        }
        Ok(self.with(node, MemberState::Out, epoch))
    }

    /// The next epoch's configuration with `node`, which was out, back
    /// after the tails as syncing.
    pub fn rejoin(&self, node: NodeId, epoch: u64) -> Result<ChainConfig, ChainConfigError> {
        self.expect(node, MemberState::Out)?;
        let mut next = self.with(node, MemberState::Syncing, epoch);
        next.joined.insert(node, epoch);
        Ok(next)
    }

    /// The next epoch's configuration with `node`, caught up, serving: it
    /// becomes the tail of the chains it follows.
    pub fn promote(&self, node: NodeId, epoch: u64) -> Result<ChainConfig, ChainConfigError> {
        self.expect(node, MemberState::Syncing)?;
        Ok(self.with(node, MemberState::Serving, epoch))
    }

    fn expect(&self, node: NodeId, wanted: MemberState) -> Result<(), ChainConfigError> {
        let state = self.state(node);
        if state == wanted {
            Ok(())
        } else {
            Err(ChainConfigError::WrongState {
                node,
                state,
                wanted,
            })
        }
    }

    fn with(&self, node: NodeId, state: MemberState, epoch: u64) -> ChainConfig {
        let mut next = self.clone();
        next.epoch = epoch;
        if state == MemberState::Serving {
            next.states.remove(&node);
        } else {
            next.states.insert(node, state);
        }
        next
    }
}

/// A member's role in one key's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The only serving member: head and tail at once.
    Alone,
    /// Orders the key's writes and gives them versions.
    Head,
    /// Passes writes down and commits back up.
    Middle,
    /// Commits writes and answers version queries.
    Tail,
    /// After the tail, catching up: takes committed writes, no reads.
    Syncing,
}

/// One key's chain: serving members head first, then syncing ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    serving: Vec<NodeId>,
    syncing: Vec<NodeId>,
}

impl Chain {
    /// The head (`None`: no serving member; the key is unavailable).
    pub fn head(&self) -> Option<NodeId> {
        self.serving.first().copied()
    }

    /// The tail: it commits and answers version queries.
    pub fn tail(&self) -> Option<NodeId> {
        self.serving.last().copied()
    }

    /// Every member in chain order: serving, then syncing.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.serving.iter().chain(&self.syncing).copied()
    }

    fn position(&self, node: NodeId) -> Option<usize> {
        self.members().position(|m| m == node)
    }

    /// The last member: it commits writes and answers version queries
    /// (a syncing member when one follows the serving tail: every write
    /// committed since it rejoined passed through it).
    pub fn last(&self) -> Option<NodeId> {
        self.members().last()
    }

    /// Whether `node` serves reads in this chain.
    pub fn serves(&self, node: NodeId) -> bool {
        self.serving.contains(&node)
    }

    /// The serving members, head first.
    pub fn serving(&self) -> &[NodeId] {
        &self.serving
    }

    /// The member `node` passes writes to (the tail passes committed
    /// writes to the first syncing member, and each syncing member to the
    /// next).
    pub fn successor(&self, node: NodeId) -> Option<NodeId> {
        let at = self.position(node)?;
        self.members().nth(at + 1)
    }

    /// The member that passes writes to `node`.
    pub fn predecessor(&self, node: NodeId) -> Option<NodeId> {
        let at = self.position(node)?;
        at.checked_sub(1).and_then(|p| self.members().nth(p))
    }

    /// `node`'s role, if it is in the chain.
    pub fn role(&self, node: NodeId) -> Option<Role> {
        if self.syncing.contains(&node) {
            return Some(Role::Syncing);
        }
        let at = self.serving.iter().position(|&m| m == node)?;
        Some(match (at == 0, at + 1 == self.serving.len()) {
            (true, true) => Role::Alone,
            (true, false) => Role::Head,
            (false, true) => Role::Tail,
            (false, false) => Role::Middle,
        })
    }
}

/// What a member must do for one key when its chain changes (a new epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// Send its dirty versions again to its new successor: writes the old
    /// successor may not have passed on.
    ReforwardDirty {
        /// The new successor.
        to: NodeId,
    },
    /// It became the tail: every dirty version it holds passed through it
    /// towards the old tail, so it commits them all and sends the commit
    /// back.
    CommitAllDirty,
    /// A syncing member follows it newly: send it the committed state
    /// (then every committed write, as successor).
    StreamCommitted {
        /// The syncing member.
        to: NodeId,
    },
}

/// What `me` must do when a key's chain goes from `old` to `new`.
pub fn handovers(me: NodeId, old: &Chain, new: &Chain) -> Vec<Handover> {
    let mut out = Vec::new();
    let Some(role) = new.role(me) else {
        return out;
    };
    if role == Role::Syncing {
        return out;
    }
    let next = new.successor(me);
    if let Some(to) = next {
        if old.successor(me) != Some(to) {
            if new.role(to) == Some(Role::Syncing) {
                out.push(Handover::StreamCommitted { to });
            } else {
                out.push(Handover::ReforwardDirty { to });
            }
        }
    }
    let tail_now = matches!(role, Role::Tail | Role::Alone);
    let tail_before = matches!(old.role(me), Some(Role::Tail | Role::Alone));
    if tail_now && !tail_before {
        out.push(Handover::CommitAllDirty);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    const R: [u64; 3] = [3, 1, 2];

    #[test]
    fn a_chain_follows_ring_order_without_out_members_and_syncing_ones_last() {
        let c = ChainConfig::new(1);
        let ch = c.chain(&ids(&R));
        assert_eq!(ch.head(), Some(NodeId(3)));
        assert_eq!(ch.tail(), Some(NodeId(2)));
        assert_eq!(ch.role(NodeId(1)), Some(Role::Middle));
        assert_eq!(ch.successor(NodeId(3)), Some(NodeId(1)));
        assert_eq!(ch.predecessor(NodeId(3)), None);
        assert_eq!(ch.successor(NodeId(2)), None);
        let out = c.take_out(NodeId(1), &ids(&R), 2).unwrap();
        assert_eq!(out.epoch, 2);
        let ch = out.chain(&ids(&R));
        assert_eq!(ch.members().collect::<Vec<_>>(), ids(&[3, 2]));
        let back = out.rejoin(NodeId(1), 3).unwrap();
        let ch = back.chain(&ids(&R));
        assert_eq!(ch.members().collect::<Vec<_>>(), ids(&[3, 2, 1]));
        assert_eq!(ch.tail(), Some(NodeId(2)));
        assert_eq!(ch.role(NodeId(1)), Some(Role::Syncing));
        assert_eq!(ch.successor(NodeId(2)), Some(NodeId(1)));
        // The syncing member is the last: it commits.
        assert_eq!(ch.last(), Some(NodeId(1)));
        assert!(!ch.serves(NodeId(1)));
        assert_eq!(back.joined_at(NodeId(1)), 3);
        let promoted = back.promote(NodeId(1), 4).unwrap();
        // Serving again, at the tail (not back at its ring position).
        assert_eq!(
            promoted.chain(&ids(&R)).members().collect::<Vec<_>>(),
            ids(&[3, 2, 1])
        );
        assert_eq!(
            promoted.not_serving().count(),
            0,
            "a serving member is not named"
        );
        // When it rejoined is remembered: dirty versions from before stay
        // dropped.
        assert_eq!(promoted.joined_at(NodeId(1)), 3);
        // A member that rejoined serves at the tail, behind the members
        // that stayed, even where the ring would put it first.
        let out3 = ChainConfig::new(5)
            .take_out(NodeId(3), &ids(&R), 6)
            .unwrap();
        let back3 = out3
            .rejoin(NodeId(3), 7)
            .unwrap()
            .promote(NodeId(3), 8)
            .unwrap();
        let ch = back3.chain(&ids(&R));
        assert_eq!(ch.members().collect::<Vec<_>>(), ids(&[1, 2, 3]));
        assert_eq!(ch.head(), Some(NodeId(1)));
        assert_eq!(ch.tail(), Some(NodeId(3)));
    }

    #[test]
    fn changes_that_do_not_apply_are_refused() {
        let c = ChainConfig::new(1);
        assert!(matches!(
            c.rejoin(NodeId(1), 2),
            Err(ChainConfigError::WrongState { .. })
        ));
        assert!(matches!(
            c.promote(NodeId(1), 2),
            Err(ChainConfigError::WrongState { .. })
        ));
        let c = c.take_out(NodeId(1), &ids(&R), 2).unwrap();
        let c = c.take_out(NodeId(2), &ids(&R), 3).unwrap();
        assert_eq!(
            c.take_out(NodeId(3), &ids(&R), 4),
            Err(ChainConfigError::LastServing(NodeId(3)))
        );
        assert_eq!(c.chain(&ids(&R)).role(NodeId(3)), Some(Role::Alone));
        // No serving member: no head, no tail.
        let empty = Chain::default();
        assert_eq!((empty.head(), empty.tail()), (None, None));
    }

    #[test]
    fn a_failed_head_middle_or_tail_hands_over_as_chain_replication_needs() {
        let all = ChainConfig::new(1);
        let old = all.chain(&ids(&R)); // 3 -> 1 -> 2
        let without = |n: u64| {
            all.take_out(NodeId(n), &ids(&R), 2)
                .unwrap()
                .chain(&ids(&R))
        };
        // Head 3 fails: 1 is the head; nothing to resend (its successor
        // is unchanged), and the new head continues from its versions.
        let new = without(3);
        assert_eq!(new.head(), Some(NodeId(1)));
        assert!(handovers(NodeId(1), &old, &new).is_empty());
        assert!(handovers(NodeId(2), &old, &new).is_empty());
        // Middle 1 fails: 3 resends its dirty versions to 2.
        let new = without(1);
        assert_eq!(
            handovers(NodeId(3), &old, &new),
            vec![Handover::ReforwardDirty { to: NodeId(2) }]
        );
        assert!(handovers(NodeId(2), &old, &new).is_empty());
        // Tail 2 fails: 1 is the tail and commits what it holds.
        let new = without(2);
        assert_eq!(
            handovers(NodeId(1), &old, &new),
            vec![Handover::CommitAllDirty]
        );
        assert!(handovers(NodeId(3), &old, &new).is_empty());
        // A failed member has nothing to do.
        assert!(handovers(NodeId(2), &old, &new).is_empty());
    }

    #[test]
    fn a_returning_member_is_streamed_to_then_becomes_the_tail() {
        let out = ChainConfig::new(1)
            .take_out(NodeId(2), &ids(&R), 2)
            .unwrap();
        let before = out.chain(&ids(&R)); // 3 -> 1
        let syncing = out.rejoin(NodeId(2), 3).unwrap();
        let during = syncing.chain(&ids(&R)); // 3 -> 1 -> (2 syncing)
        assert_eq!(
            handovers(NodeId(1), &before, &during),
            vec![Handover::StreamCommitted { to: NodeId(2) }]
        );
        assert!(handovers(NodeId(2), &before, &during).is_empty());
        let after = syncing.promote(NodeId(2), 4).unwrap().chain(&ids(&R));
        assert_eq!(after.tail(), Some(NodeId(2)));
        assert_eq!(
            handovers(NodeId(2), &during, &after),
            vec![Handover::CommitAllDirty]
        );
        // The old tail keeps its successor: nothing to resend.
        assert!(handovers(NodeId(1), &during, &after).is_empty());
    }
}
