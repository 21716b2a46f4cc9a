//! What the simulator checks of anti-entropy and hinted handoff beyond the
//! history: replicas that converge without reads, revived nodes whose
//! stores are judged as reads the moment they leave `Syncing`, hint bytes
//! under their cap, and the compactions that purge tombstones.

use super::{Event, SimCluster};
use crate::cluster::history::{OpKind, OpOutcome, OpRecord};
use crate::cluster::Fault;
use cassio_core::{ClientResponse, NodeStatus, Store};
use std::time::Duration;

/// How long a restarted node may stay `Syncing` before that is reported.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// How long a leaving node may take to hand its ranges over.
const LEAVE_LIMIT: Duration = Duration::from_secs(120);

impl SimCluster<'_> {
    /// Guarantee 4 without reads: every key's replicas (in the first
    /// regular node's view) hold the same version.
    pub(super) fn converge_check(&mut self) {
        let Some(view) = self
            .regular_nodes()
            .first()
            .and_then(|&i| self.nodes[i].node.as_ref())
        else {
            return;
        };
        let mut unconverged = Vec::new();
        for key in self.keys() {
            let (skey, placed_by) = super::stored_as(self.scenario, &key);
            let owners = view.replicas_of(cassio_core::DEFAULT_KEYSPACE, &placed_by);
            let versions: Vec<_> = owners
                .iter()
                .map(|&id| {
                    let v = self
                        .nodes
                        .iter()
                        .find(|n| n.id == id && n.node.is_some())
                        .and_then(|n| n.store.as_ref())
                        .map(|s| s.get(&skey).ok().flatten());
                    (id, v)
                })
                .collect();
            let first = versions.first().map(|(_, v)| v.clone());
            let same = versions
                .iter()
                .all(|(_, v)| v.is_some() && Some(v.clone()) == first);
            if !same {
                unconverged.push((key, format!("{versions:?}")));
            }
        }
        self.unconverged = unconverged;
    }

    /// Watches node `i`, asked to leave at `since`, until it announces
    /// `Left`; the process stops two gossip rounds later (as the node host
    /// does, so `Left` spreads). A crash while leaving ends the watch.
    pub(super) fn left_watch(&mut self, i: usize, since: cassio_core::Instant) {
        let Some(node) = self.nodes[i].node.as_ref() else {
            return;
        };
        if node.has_left() {
            let spread = self.scenario.gossip.interval * 2;
            self.schedule(self.now + spread, Event::Fault(Fault::Crash(i)));
            return;
        }
        if self.now.saturating_duration_since(since) > LEAVE_LIMIT {
            self.never_left.push(self.nodes[i].id);
            return;
        }
        self.schedule(
            self.now + Duration::from_millis(100),
            Event::LeftWatch { node: i, since },
        );
    }

    /// Watches node `i`, restarted at `since`, until it leaves `Syncing`;
    /// then reads its store as a read of every key it replicates.
    pub(super) fn caught_up_watch(
        &mut self,
        i: usize,
        incarnation: u64,
        since: cassio_core::Instant,
    ) {
        if self.nodes[i].incarnation != incarnation {
            return;
        }
        let Some(node) = self.nodes[i].node.as_ref() else {
            return;
        };
        if node.membership().status() == NodeStatus::Syncing {
            if self.now.saturating_duration_since(since) > CATCH_UP_LIMIT {
                self.never_caught_up.push(self.nodes[i].id);
            } else {
                self.schedule(
                    self.now + Duration::from_millis(100),
                    Event::CaughtUpWatch {
                        node: i,
                        incarnation,
                        since,
                    },
                );
            }
            return;
        }
        let id = self.nodes[i].id;
        // A node serving this read would judge expiries by its own clock.
        let wall = self.wall_of(i);
        let Some(store) = self.nodes[i].store.clone() else {
            return;
        };
        for key in self.keys() {
            if !node
                .replicas_of(
                    cassio_core::DEFAULT_KEYSPACE,
                    &super::stored_as(self.scenario, &key).1,
                )
                .contains(&id)
            {
                continue;
            }
            let skey = super::stored_as(self.scenario, &key).0;
            let Ok(v) = store.get(&skey) else {
                continue;
            };
            self.history.push(OpRecord {
                client: usize::MAX,
                node: id,
                key,
                kind: OpKind::Get,
                ts: None,
                invoked: self.now,
                completed: Some(self.now),
                outcome: OpOutcome::Done(Ok(ClientResponse::Value(
                    v.and_then(|v| v.live_value(wall).cloned()),
                ))),
                repair_pass: false,
                applied: Vec::new(),
                fanned_out: false,
                coordinator_paused: false,
                ttl: None,
                level: None,
                datacenter: String::new(),
            });
        }
    }

    /// Compacts every running node's store at its wall clock.
    pub(super) fn compact_tick(&mut self, every: Duration) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_some() {
                let wall = self.wall_of(i);
                self.factory.compact(self.nodes[i].id, wall);
            }
        }
        self.schedule(self.now + every, Event::CompactTick);
    }

    /// Records the most hint bytes any node holds for one target.
    pub(super) fn hint_sample(&mut self) {
        for n in &self.nodes {
            if let Some(node) = &n.node {
                let most = node
                    .hint_status()
                    .pending_bytes
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(0);
                self.max_hint_bytes_per_target = self.max_hint_bytes_per_target.max(most);
            }
        }
        self.schedule(self.now + Duration::from_secs(1), Event::HintSample);
    }

    /// Records where node `i` places the probe keys, if it places keys by
    /// an agreed ring: two nodes that know the same schema version must
    /// place every key alike.
    pub(super) fn placement_sample(&mut self, i: usize) {
        use std::hash::{Hash, Hasher};
        let Some(node) = self.nodes[i].node.as_ref() else {
            return;
        };
        let schema = node.schema();
        if schema.ring.is_none() {
            return;
        }
        // SipHash with fixed keys: the same on every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in 0..PLACEMENT_PROBES {
            let key = format!("placement-probe-{p}");
            node.replicas_of(cassio_core::DEFAULT_KEYSPACE, key.as_bytes())
                .hash(&mut h);
        }
        let sample = (schema.version, schema.digest(), h.finish());
        self.placements.entry(sample).or_insert(node.id());
    }
}

/// How many keys [`SimCluster::placement_sample`] places.
const PLACEMENT_PROBES: usize = 64;
