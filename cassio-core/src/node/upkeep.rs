//! The node's background work on its timer: anti-entropy rounds, hint
//! delivery, reclaiming dropped keyspaces, the tombstone watermark, and
//! the storage operations those machines ask for.

use super::*;

impl Node {
    /// Runs the background machines: tree rebuilds, anti-entropy rounds,
    /// hint delivery, the purge watermark and the exit from `Syncing`.
    pub(super) fn background(&mut self, now: Instant) {
        #[cfg(feature = "mutations")]
        if self.mutations.no_anti_entropy {
            // Nothing syncs: a joining or restarted node owns its tokens
            // and serves at once.
            let status = self.membership.status();
            if status == NodeStatus::Syncing
                || (status == NodeStatus::Joining && self.membership.answered())
            {
                self.membership.set_status(NodeStatus::Normal);
            }
            return;
        }
        self.rebuild_placement();
        let wall = self.wall_now(now);
        self.settle_schema(now);
        let membership = &self.membership;
        let alive = |id: NodeId| membership.is_alive(id);
        self.ae.tick(
            now,
            wall,
            self.readiness.is_ready() && !self.shutting_down,
            &self.layout.sync_placement(),
            &alive,
            &mut self.budget,
            &mut self.fx,
        );
        self.hints.tick(now, &alive, &mut self.budget, &mut self.fx);
        let repair = self.ae.status();
        self.membership.set_sync_state(
            repair.repaired_through,
            repair.repaired_schema,
            self.hints.targets_pending(),
        );
        self.update_watermark();
        let membership = &self.membership;
        if membership.status() == NodeStatus::Syncing
            && self
                .ae
                .synced_with_every_live_peer(&|id| membership.is_alive(id))
            && !membership.hints_pending_for(self.id)
        {
            self.membership.set_status(NodeStatus::Normal);
            self.out.push_back(Output::Event(NodeEvent::CaughtUp));
        }
        self.advance_joining();
        self.advance_transition(now, wall);
        self.drain_fx();
        let mut fx = Vec::new();
        self.reclaim.tick(
            now,
            self.readiness.is_ready() && !self.shutting_down,
            &mut fx,
        );
        self.reclaim_effects(fx);
    }

    pub(super) fn reclaim_effects(&mut self, fx: Vec<(StorageOp, crate::reclaim::ReclaimWaiter)>) {
        for (op, w) in fx {
            self.storage(op, Waiter::Reclaim(w));
        }
    }

    /// Reclaim figures: walks of the store, items of dropped keyspaces
    /// turned into tombstones.
    pub fn reclaim_status(&self) -> crate::reclaim::ReclaimStatus {
        self.reclaim.status()
    }

    /// Tombstones may be purged below the time before which every member
    /// has completed an anti-entropy round with all its peers (less the
    /// clock offset and a request's lifetime, for writes in flight then).
    pub(super) fn update_watermark(&mut self) {
        let Some(min) = self
            .membership
            .repair_watermarks()
            .into_iter()
            .map(|(_, w)| w)
            .min()
        else {
            return;
        };
        let margin = self.clock.max_offset()
            + u64::try_from(self.request_timeout.as_micros()).unwrap_or(u64::MAX)
            + 60_000_000;
        let wm = min.saturating_sub(margin);
        if min > 0 && wm > self.watermark_sent {
            self.watermark_sent = wm;
            self.storage(
                StorageOp::SetPurgeWatermark { micros: wm },
                Waiter::Bg(BgWaiter::Watermark),
            );
            self.out
                .push_back(Output::Event(NodeEvent::PurgeWatermark { micros: wm }));
        }
    }

    /// Turns what the background machines asked for into outputs.
    pub(super) fn drain_fx(&mut self) {
        let fx = std::mem::take(&mut self.fx);
        for (to, msg) in fx.sends {
            self.send(to, msg);
        }
        for (op, w) in fx.storage {
            self.storage(op, Waiter::Bg(w));
        }
        for e in fx.events {
            self.out.push_back(Output::Event(e));
        }
    }

    /// A background storage operation completed: it goes back to the
    /// machine that asked for it, then what that machine asks for goes out.
    pub(super) fn background_done(&mut self, now: Instant, w: BgWaiter, result: StorageResult) {
        self.rebuild_placement();
        let wall = self.wall_now(now);
        let failed = Machines {
            ae: &mut self.ae,
            hints: &mut self.hints,
            budget: &mut self.budget,
            fx: &mut self.fx,
        }
        .storage_done(&self.layout.sync_placement(), now, wall, w, result);
        if let Some(e) = failed {
            self.out.push_back(Output::Event(e));
        }
        self.drain_fx();
    }

    /// Keeps hints of `version` for the replicas of a finished write that
    /// did not apply it (the coordinator chose them).
    pub(super) fn hint_missed(
        &mut self,
        now: Instant,
        key: Key,
        version: Versioned,
        targets: Vec<NodeId>,
    ) {
        #[cfg(feature = "mutations")]
        if self.mutations.no_anti_entropy {
            return;
        }
        let wall = self.wall_now(now);
        for r in targets {
            let down_for = self.membership.down_for(r, now);
            self.hints.hint(
                r,
                key.clone(),
                version.clone(),
                down_for,
                wall,
                &mut self.fx,
            );
        }
        self.drain_fx();
    }
}
