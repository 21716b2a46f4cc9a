//! How a node drives its chain machine ([`crate::chain`]): the context it
//! gives it (the schema, the ring, liveness, whether it is the claimant)
//! and what it does with the machine's requests.

use super::*;
use crate::chain::{stored_version, ChainCtx, ChainEffect, ChainMachine, ChainWaiter};

impl Node {
    /// Runs `f` on the chain machine, then carries out what it asked for.
    pub(super) fn chain_with(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut ChainMachine, &ChainCtx<'_>, &mut Vec<ChainEffect>),
    ) {
        self.rebuild_placement();
        let claimant = self.is_claimant();
        let schema = self.schema.schema();
        let accepted_epoch = self
            .schema
            .acceptor()
            .accepted
            .as_ref()
            .filter(|(_, s)| s.version > schema.version)
            .map_or(0, |(_, s)| s.chain.epoch);
        let layout = &self.layout;
        let membership = &self.membership;
        let replicas =
            |token: Token, r: &crate::topology::Replication| layout.write_sets_for(token, r);
        let alive = |n: NodeId| membership.is_alive(n);
        let cx = ChainCtx {
            me: self.id,
            now,
            schema,
            replicas: &replicas,
            alive: &alive,
            claimant,
            accepted_epoch,
            wall: crate::clock_guard::wall_at(self.wall, now),
            remembered: membership.remembered_from_before(),
        };
        let mut fx = Vec::new();
        f(&mut self.chain, &cx, &mut fx);
        for e in fx {
            match e {
                ChainEffect::Send(to, msg) => self.send(to, PeerMsg::Chain(Box::new(msg))),
                ChainEffect::Storage(op, w) => self.storage(op, Waiter::Chain(w)),
                ChainEffect::Store(key, bytes) => {
                    // Stamped by this node's clock: every store of a record
                    // is newer than the last, whatever order the store
                    // runs them in.
                    let ts = self.clock.stamp(self.wall_now(now));
                    let op = StorageOp::Apply {
                        key: key.clone(),
                        version: stored_version(ts, bytes),
                    };
                    self.storage(op, Waiter::Chain(ChainWaiter::Store(key)));
                }
                ChainEffect::Reply(id, r) => self.reply(id, r),
                ChainEffect::Propose(change) => {
                    if !self.schema.busy() {
                        let view = self.agreement_view();
                        self.run_schema(now, |a| a.propose(now, change, None, &view));
                    }
                }
            }
        }
    }

    /// Figures of this node's part in the CRAQ chains.
    pub fn chain_status(&self, now: Instant) -> crate::chain::ChainStatus {
        self.chain.status(now)
    }
}
