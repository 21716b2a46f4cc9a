//! Carrying out the nemesis's faults on the running cluster.

use super::{Event, SimCluster};
use crate::cluster::history::OpOutcome;
use crate::cluster::stores::FaultyStore;
use crate::cluster::Fault;
use cassio_core::{Instant, NodeId, RequestId, Store};
use std::sync::Arc;
use std::time::Duration;

impl SimCluster<'_> {
    /// Asks node `by` for schema change `idx` (a second later again while
    /// `by` is down).
    pub(super) fn ask_schema(&mut self, by: usize, idx: usize) {
        let change = self.schema_changes[idx].0.clone();
        let now = self.now_for(by.min(self.nodes.len().saturating_sub(1)));
        // Ids of operator requests stay far from the clients'.
        let id = RequestId(u64::MAX - idx as u64);
        match self.nodes.get_mut(by).and_then(|n| n.node.as_mut()) {
            Some(n) => {
                self.schema_requests.insert(id, idx);
                n.change_schema(now, id, change);
                self.pump(by);
            }
            None => self.schedule(
                self.now + Duration::from_secs(1),
                Event::SchemaRetry { by, idx },
            ),
        }
    }

    /// A schema change was answered: an operator retries one the node was
    /// not ready for, or one waiting for a repair, a second later, and
    /// keeps any other answer.
    pub(super) fn schema_answered(
        &mut self,
        idx: usize,
        by: usize,
        result: Result<cassio_core::ClientResponse, cassio_core::ClientError>,
    ) {
        use cassio_core::schema::SchemaError;
        use cassio_core::schema_agreement::ChangeError;
        use cassio_core::{ClientError, ClientResponse};
        match result {
            Err(ClientError::Schema(ChangeError::Invalid(SchemaError::RepairPending {
                ..
            }))) => {
                self.schema_repair_waits += 1;
                self.schedule(
                    self.now + Duration::from_secs(1),
                    Event::SchemaRetry { by, idx },
                )
            }
            Err(ClientError::Joining | ClientError::ShuttingDown) => self.schedule(
                self.now + Duration::from_secs(1),
                Event::SchemaRetry { by, idx },
            ),
            Ok(ClientResponse::SchemaChanged { version }) => {
                self.schema_changes[idx].1 = Some(Ok(version))
            }
            Ok(other) => {
                self.schema_changes[idx].1 = Some(Err(ClientError::Schema(
                    cassio_core::schema_agreement::ChangeError::Busy,
                )));
                debug_assert!(false, "a schema change answered {other:?}");
            }
            Err(e) => self.schema_changes[idx].1 = Some(Err(e)),
        }
        if self.schema_changes[idx].1.is_some() {
            if let Some((by, change)) = self.schema_queued.pop_front() {
                let next = self.schema_changes.len();
                self.schema_changes.push((change, None));
                self.schedule(self.now, Event::SchemaRetry { by, idx: next });
            }
        }
    }

    /// The process of node `i` dies: requests it coordinated are lost, its
    /// timers and storage operations are orphaned, its store is crashed.
    pub(super) fn crash(&mut self, i: usize) {
        if self.nodes.get(i).is_none_or(|n| n.node.is_none()) {
            return;
        }
        let id = self.nodes[i].id;
        let lost: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, &idx)| self.history[idx].node == id)
            .map(|(&r, _)| r)
            .collect();
        for r in lost {
            if let Some(idx) = self.in_flight.remove(&r) {
                self.history[idx].outcome = OpOutcome::CoordinatorCrashed;
                let client = self.history[idx].client;
                if !self.history[idx].repair_pass {
                    self.client_backoff(client);
                }
            }
        }
        let n = &mut self.nodes[i];
        n.node = None;
        // Bumping the incarnation orphans its timers, storage operations
        // and queued client requests.
        n.incarnation += 1;
        n.timer_at = None;
        n.paused_until = Instant::ZERO;
        n.stall_until = Instant::ZERO;
        let store = self.take_store(i);
        let reopened = self.factory.crash(id, store);
        self.put_store(i, reopened);
    }

    pub(super) fn take_store(&mut self, i: usize) -> Arc<dyn Store> {
        match self.nodes[i].store.take() {
            Some(s) => match Arc::try_unwrap(s) {
                Ok(f) => f.into_inner(),
                Err(shared) => shared as Arc<dyn Store>,
            },
            None => self.factory.open(self.nodes[i].id),
        }
    }

    pub(super) fn put_store(&mut self, i: usize, store: Arc<dyn Store>) {
        // Faults injected into the old store (errors) end with the process;
        // a store broken on purpose stays broken.
        let seed = self.seed ^ ((i as u64) << 32) ^ self.nodes[i].incarnation;
        let faulty = FaultyStore::new(store, seed);
        if let Some((n, every)) = self.scenario.drop_every_nth_write {
            if n == i {
                faulty.set_drop_every(Some(every));
            }
        }
        self.nodes[i].store = Some(Arc::new(faulty));
    }

    pub(super) fn apply_fault(&mut self, fault: Fault) {
        match fault {
            Fault::Partition { from, to, one_way } => {
                for &a in &from {
                    for &b in &to {
                        self.cut.insert((a, b));
                        if !one_way {
                            self.cut.insert((b, a));
                        }
                    }
                }
            }
            Fault::Heal => self.cut.clear(),
            Fault::Crash(i) => self.crash(i),
            Fault::Restart(i) => {
                if self
                    .nodes
                    .get(i)
                    .is_some_and(|n| n.node.is_none() && n.started_before && !n.left)
                {
                    self.start_node(i);
                }
            }
            Fault::Wipe { node, new_id } => {
                if node >= self.nodes.len() {
                    return;
                }
                self.crash(node);
                let old = self.nodes[node].id;
                let id = if new_id {
                    let id = NodeId(self.next_node_id);
                    self.next_node_id += 1;
                    id
                } else {
                    old
                };
                let store = self.take_store(node);
                let empty = self.factory.wipe(old, store, id);
                self.put_store(node, empty);
                // The hint log lives in the wiped directory too.
                self.nodes[node].hints = Arc::new(crate::MemHintLog::new());
                self.nodes[node].id = id;
                self.nodes[node].fresh = true;
                // A new id at the same address replaces the dead one (as an
                // operator starts it with `--replace`).
                self.nodes[node].replaces = new_id.then_some(old);
                self.nodes[node].persisted = None;
            }
            Fault::SetLoss(p) => self.loss = p,
            Fault::ClockJump { node, micros } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.skew_micros = n.skew_micros.saturating_add(micros);
                    n.clock_outlier |= n.skew_micros.unsigned_abs() >= super::CLOCK_OUTLIER_MICROS;
                }
            }
            Fault::SyncClocks => {
                for n in &mut self.nodes {
                    n.skew_micros = 0;
                }
            }
            Fault::StorageErrors { node, rate } => {
                if let Some(s) = self.nodes.get(node).and_then(|n| n.store.as_ref()) {
                    s.set_error_rate(rate);
                }
            }
            Fault::StorageStall { node, duration } => {
                let until = self.now + duration;
                if let Some(n) = self.nodes.get_mut(node) {
                    n.stall_until = n.stall_until.max(until);
                }
            }
            Fault::Pause { node, duration } => {
                if self.nodes.get(node).is_none_or(|n| n.node.is_none()) {
                    return;
                }
                let until = self.now + duration;
                self.nodes[node].paused_until = self.nodes[node].paused_until.max(until);
                let id = self.nodes[node].id;
                for &idx in self.in_flight.values() {
                    if self.history[idx].node == id {
                        self.history[idx].coordinator_paused = true;
                    }
                }
            }
            Fault::Join(i) => {
                if self
                    .nodes
                    .get(i)
                    .is_some_and(|n| n.node.is_none() && !n.left)
                {
                    self.start_node(i);
                }
            }
            Fault::RemoveDead { by, dead } => {
                let Some(dead_id) = self.nodes.get(dead).map(|n| n.id) else {
                    return;
                };
                self.crash(dead);
                self.nodes[dead].left = true;
                let now = self.now_for(by.min(self.nodes.len().saturating_sub(1)));
                if let Some(n) = self.nodes.get_mut(by).and_then(|n| n.node.as_mut()) {
                    // Refused while `by` still believes it alive: the
                    // operator retries a second later.
                    if n.remove_dead(now, dead_id).is_err() {
                        self.schedule(
                            self.now + Duration::from_secs(1),
                            Event::Fault(Fault::RemoveDead { by, dead }),
                        );
                    }
                    self.pump(by);
                }
            }
            Fault::SchemaChange { by, change } => {
                // In order: queued behind an unanswered change (or behind
                // changes already queued, so they keep the scenario's
                // order); `schema_answered` asks the next.
                if self.scenario.schema_changes_in_order
                    && (!self.schema_queued.is_empty()
                        || self.schema_changes.iter().any(|(_, a)| a.is_none()))
                {
                    self.schema_queued.push_back((by, change));
                    return;
                }
                let idx = self.schema_changes.len();
                self.schema_changes.push((change.clone(), None));
                self.ask_schema(by, idx);
            }
            Fault::Leave(i) => {
                let now = self.now_for(i.min(self.nodes.len().saturating_sub(1)));
                if let Some(n) = self.nodes.get_mut(i).and_then(|n| n.node.as_mut()) {
                    // A refusal (too few nodes would remain) is the node's
                    // answer to an operator; the scenario then keeps it.
                    if n.leave(now).is_ok() {
                        self.nodes[i].left = true;
                        self.schedule(
                            self.now,
                            Event::LeftWatch {
                                node: i,
                                since: self.now,
                            },
                        );
                    }
                    self.pump(i);
                }
            }
        }
    }
}
