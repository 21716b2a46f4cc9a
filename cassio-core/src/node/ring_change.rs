//! The node's side of ring changes (see [`crate::transition`]): leaving
//! (decommission), removing a dead member, a joining node taking its
//! tokens, the transition trackers, and which keys this node holds while
//! the rings move.

use super::{split_storage_key_token, Node, NodeEvent, NodeId, NodeStatus, Output};
use crate::time::{Instant, Now};
use crate::transition::{LeaveError, RemoveError};
use std::collections::BTreeMap;

impl Node {
    /// Starts a graceful leave (decommission): the node gossips `Leaving`
    /// and keeps serving while the nodes that gain its ranges sync them,
    /// then announces `Left`; the host shuts down once [`Node::has_left`]
    /// is true. Refused when the remaining nodes would be fewer than a
    /// keyspace's replication factor.
    pub fn leave(&mut self, now: impl Into<Now>) -> Result<(), LeaveError> {
        let now = self.enter(now);
        let status = self.membership.status();
        if status == NodeStatus::Leaving {
            return Ok(());
        }
        if !status.owns_tokens() {
            return Err(LeaveError::NotAnOwner(status));
        }
        let remaining = self
            .membership
            .token_owners_next()
            .iter()
            .filter(|(id, _)| *id != self.id)
            .count();
        let rf = self.max_replication_factor();
        if remaining < rf {
            return Err(LeaveError::TooFewNodes { remaining, rf });
        }
        self.membership.leave();
        self.rebuild_placement();
        self.background(now);
        self.leave_input();
        Ok(())
    }

    /// Asks the cluster to take dead member `dead` off the ring (`cassio
    /// remove`): its ranges are synced among the other nodes from the
    /// replicas that remain, then every node forgets it. Refused for a
    /// live, unknown or essential member.
    pub fn remove_dead(&mut self, now: impl Into<Now>, dead: NodeId) -> Result<(), RemoveError> {
        let now = self.enter(now);
        if dead == self.id {
            return Err(RemoveError::Itself);
        }
        if !self.membership.is_member(dead) {
            return Err(RemoveError::Unknown(dead));
        }
        if self.membership.is_alive(dead) {
            return Err(RemoveError::Alive(dead));
        }
        let remaining = self
            .membership
            .token_owners_next()
            .iter()
            .filter(|(id, _)| *id != dead)
            .count();
        let rf = self.max_replication_factor();
        if remaining < rf {
            return Err(RemoveError::TooFewNodes { remaining, rf });
        }
        let mut removing = self.membership.removing().to_vec();
        removing.push(dead);
        self.membership.set_removing(removing);
        #[cfg(feature = "mutations")]
        if self.mutations.remove_without_sync {
            self.membership
                .complete_removal(dead, now, &mut self.events);
        }
        self.rebuild_placement();
        self.background(now);
        self.leave_input();
        Ok(())
    }

    /// The largest replication factor of this node's keyspaces.
    pub(super) fn max_replication_factor(&self) -> usize {
        self.schema
            .schema()
            .keyspaces
            .values()
            .map(|k| k.config.replication_factor)
            .max()
            .unwrap_or(1)
    }

    /// Whether this node holds storage key `key` in this node's view: on
    /// the current ring for a read, on the current or next ring for a
    /// write. A coordinator whose view is behind (it was cut off while a
    /// node joined) must not count a node that no longer holds the key:
    /// reads would not ask it. Keys of unknown keyspaces are left to the
    /// keyspace check. Ownership is judged with the largest replication
    /// factor any member declares for the keyspace, so a node configured
    /// with a smaller one (refused as a coordinator by the keyspace check)
    /// still serves as a replica of the cluster's.
    pub(super) fn holds(&mut self, key: &[u8], read: bool) -> bool {
        let Some((ks, token, _)) = split_storage_key_token(key) else {
            return true;
        };
        let Some((name, own, replication)) = self.schema.schema().by_storage_name(ks).map(|k| {
            (
                k.config.name.clone(),
                k.config.replication_factor,
                k.config.replication(),
            )
        }) else {
            // A keyspace this node does not know: its schema is behind (it
            // fetches the newer one when a peer's message says so).
            return self.schema.schema().version >= self.peer_schema;
        };
        let epoch = self.membership.view_epoch();
        if self.widest_rf.0 != epoch {
            let mut widest = BTreeMap::new();
            for (_, defs) in self.membership.member_keyspaces() {
                for d in defs {
                    let rf = widest.entry(d.name.clone()).or_insert(0);
                    *rf = d.replication_factor.max(*rf);
                }
            }
            self.widest_rf = (epoch, widest);
        }
        // Before the cluster agreed on a schema, each node's own
        // configuration says; after, the schema alone.
        let widest = if self.schema.schema().version == 0 {
            self.widest_rf.1.get(&name).copied().unwrap_or(0)
        } else {
            0
        };
        // A keyspace placed by datacenter or rack is placed by its own
        // replication (the widest plain factor does not describe it).
        let replication = if replication.is_plain() {
            crate::topology::Replication::from(widest.max(own))
        } else {
            replication
        };
        self.rebuild_placement();
        if read {
            self.layout
                .placement()
                .replicas_for(token, &replication)
                .contains(&self.id)
        } else {
            self.layout
                .write_sets_for(token, &replication)
                .iter()
                .any(|set| set.contains(&self.id))
        }
    }

    /// A joining node that has heard from the cluster: into a cluster with
    /// fewer token owners than a keyspace's replication factor, which can
    /// have acknowledged no write at that factor, it takes its tokens at
    /// once (`Syncing` until a round filled it); otherwise it stays
    /// `Joining` through the ring transition.
    pub(super) fn advance_joining(&mut self) {
        if self.membership.status() != NodeStatus::Joining || !self.membership.answered() {
            return;
        }
        if self.schema.schema().has_craq() && self.agreed_owns(self.id) == (true, true) {
            // Back on an empty data directory under its old id, kept a
            // current owner (see `claim`): it catches up as a restarted
            // node does.
            self.membership.set_status(NodeStatus::Syncing);
            self.rebuild_placement();
            return;
        }
        let owners = self.membership.token_owners().len();
        let rf = self.max_replication_factor();
        if owners < rf {
            self.membership.set_status(NodeStatus::Syncing);
            self.rebuild_placement();
        }
    }

    /// Moves this node's side of a ring transition along: its trackers,
    /// the sync round that fills the ranges it gains, and, on a leaving
    /// node, `Left` once every node gaining its ranges has synced them.
    pub(super) fn advance_transition(&mut self, now: Instant, wall: u64) {
        self.rebuild_placement();
        let id = self.layout.transition();
        let owners = self.transition_owners();
        let membership = &self.membership;
        let ae = &self.ae;
        let chain = &self.chain;
        // Chains hold data only once a schema version was chosen (they
        // serve under agreed versions only): a move on the gossip ring
        // before the first version, which the founders wait for, has no
        // chain data to pull.
        let schema = self.schema.schema();
        let has_craq = schema.has_craq() && (schema.version > 0 || self.peer_schema > 0);
        let before = self.transition.trackers();
        let step = self
            .transition
            .tick(now, wall, id, self.request_timeout, &owners, &|w| {
                ae.synced_since(w, &|p| membership.is_alive(p)) && chain.synced_since(w, has_craq)
            });
        let (acked, synced) = self.transition.trackers();
        self.membership.set_ring_trackers(acked, synced);
        if step.request_round {
            self.ae.request_round(now);
        }
        if synced != before.1 && synced != 0 {
            self.out
                .push_back(Output::Event(NodeEvent::TransitionSynced {
                    transition: synced,
                }));
        }
        #[cfg(feature = "mutations")]
        let hand_over = step.all_synced || self.mutations.leave_without_handoff;
        #[cfg(not(feature = "mutations"))]
        let hand_over = step.all_synced;
        // A move completes for this node only if the agreed ring moves it:
        // a node whose request is not yet in the agreed ring must not take
        // another move's completion for its own.
        let (owns_now, owns_next) = self.agreed_owns(self.id);
        if self.membership.status() == NodeStatus::Leaving && hand_over && owns_now && !owns_next {
            self.membership.complete_leave();
            self.rebuild_placement();
            self.out.push_back(Output::Event(NodeEvent::HandedOver));
        }
        if self.membership.status() == NodeStatus::Joining
            && step.all_synced
            && !owns_now
            && owns_next
        {
            self.membership.set_status(NodeStatus::Normal);
            self.rebuild_placement();
            let since = self.joining_since.take().unwrap_or(now);
            self.out.push_back(Output::Event(NodeEvent::Joined {
                took: now.saturating_duration_since(since),
                keys: self.ae.status().tree_items,
            }));
        }
        if step.all_synced {
            // Dead members this node asked to remove: their ranges are
            // synced on the next ring, so they can go. This node alone
            // decides, and announces it (every node then forgets them).
            for dead in self.membership.removing().to_vec() {
                if self.membership.is_member(dead)
                    && !self.membership.is_alive(dead)
                    && self.agreed_owns(dead) == (true, false)
                {
                    self.membership
                        .complete_removal(dead, now, &mut self.events);
                    self.out
                        .push_back(Output::Event(NodeEvent::RemovedDead { node: dead }));
                }
            }
            self.rebuild_placement();
        }
    }

    /// `(now, next)`: whether `id` owns its tokens on the current and the
    /// next ring this node places keys by: the agreed ring, or, before one
    /// is agreed, its own gossip view (where a node's status says).
    pub(super) fn agreed_owns(&self, id: NodeId) -> (bool, bool) {
        match &self.schema.schema().ring {
            Some(ring) => ring.owns(id),
            None => {
                let status = if id == self.id {
                    Some(self.membership.status())
                } else {
                    self.membership.state_of(id).map(|(_, app)| app.status)
                };
                let removed = self.membership.removal_requested(id);
                status.map_or((false, false), |s| {
                    (s.owns_tokens(), s.owns_tokens_next() && !removed)
                })
            }
        }
    }

    /// The live owners a ring move waits for, with their gossiped
    /// trackers: every live node on the agreed current or next ring, its
    /// status taken from the agreed ring (`Joining`: next only, `Leaving`:
    /// current only), since that ring and not its gossip decides what it
    /// must sync.
    fn transition_owners(&self) -> Vec<(NodeId, NodeStatus, u64, u64)> {
        let Some(ring) = &self.schema.schema().ring else {
            return self.membership.ring_trackers();
        };
        ring.members
            .iter()
            .filter_map(|(&id, m)| {
                let (acked, synced) = self.membership.trackers_of(id)?;
                let status = match (m.now, m.next) {
                    (true, true) => NodeStatus::Normal,
                    (true, false) => NodeStatus::Leaving,
                    (false, true) => NodeStatus::Joining,
                    (false, false) => return None,
                };
                Some((id, status, acked, synced))
            })
            .collect()
    }

    /// How long this node has been joining, while it is: since this
    /// process started (a node restarted mid-join counts from its
    /// restart); `None` once it is `Normal` or if it never joined.
    pub fn joining_for(&self, now: Instant) -> Option<std::time::Duration> {
        self.joining_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// Member `id`'s status as the cluster agreed it: its gossiped status,
    /// except that a node the agreed ring does not hold on its current
    /// ring is not yet `Normal` or `Syncing` but `Joining` (its claim is
    /// not chosen yet), and not `Leaving` but `Left` (the ring it left is
    /// agreed). Status displays, readiness probes and clients' routes use
    /// this, so a node shows `Normal` only once keys are placed on it.
    /// `None` for a node this node does not know.
    pub fn agreed_status(&self, id: NodeId) -> Option<NodeStatus> {
        let gossip = if id == self.id {
            self.membership.status()
        } else {
            self.membership.state_of(id)?.1.status
        };
        let Some(ring) = &self.schema.schema().ring else {
            return Some(gossip);
        };
        let (now, _) = ring.owns(id);
        Some(match gossip {
            NodeStatus::Normal | NodeStatus::Syncing if !now => NodeStatus::Joining,
            NodeStatus::Leaving if !now => NodeStatus::Left,
            s => s,
        })
    }
}
