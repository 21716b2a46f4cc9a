//! The clients: the workload they issue, the repair pass and liveness
//! phase after healing, and the bookkeeping that attributes what the
//! coordinators and stores did to each client operation (for the checker).

use super::{Event, SimCluster};
use crate::cluster::history::{OpKind, OpOutcome, OpRecord};
use bytes::Bytes;
use cassio_core::config::Consistency;
use cassio_core::{ClientError, ClientRequest, ClientResponse, RequestId, Timestamp, Versioned};
use rand::Rng;
use std::collections::BTreeSet;
use std::time::Duration;

impl SimCluster<'_> {
    /// The coordinator's outputs right after `handle_client` carry the
    /// write's timestamp; remember it for messages and attribution.
    pub(super) fn note_write_ts(&mut self, ts: Timestamp) {
        if let Some(idx) = self.capture {
            if let Some(op) = self.history.get_mut(idx) {
                op.ts.get_or_insert(ts);
                self.ts_owner.entry(ts).or_insert(idx);
            }
        }
    }

    /// Notes that the request being handled made the coordinator act.
    pub(super) fn note_fan_out(&mut self) {
        if let Some(op) = self.capture.and_then(|i| self.history.get_mut(i)) {
            op.fanned_out = true;
        }
    }

    /// Attributes a coordinator's `Write` to its client operation: during
    /// `handle_client` by capture, later (a re-stamped rewrite) by its tag.
    pub(super) fn note_write_msg(&mut self, from: usize, tag: u64, ts: Timestamp) {
        let key = (from, self.nodes[from].incarnation, tag);
        if let Some(idx) = self.capture {
            self.note_write_ts(ts);
            self.tag_owner.insert(key, idx);
        } else if let Some(&idx) = self.tag_owner.get(&key) {
            self.ts_owner.entry(ts).or_insert(idx);
        }
    }

    /// Records that a store executed `version`, for the operation that wrote it.
    pub(super) fn note_applied(&mut self, version: &Versioned) {
        let owner = match &version.value {
            Some(v) => self.value_owner.get(v),
            None => self.ts_owner.get(&version.ts),
        };
        if let Some(op) = owner.copied().and_then(|i| self.history.get_mut(i)) {
            op.applied.push(self.now);
        }
    }

    pub(super) fn complete(&mut self, id: RequestId, result: Result<ClientResponse, ClientError>) {
        let Some(idx) = self.in_flight.remove(&id) else {
            return;
        };
        // A row read of a one-column slice answers that cell's value.
        let result = match result {
            Ok(ClientResponse::Cells { cells, .. }) => Ok(ClientResponse::Value(
                cells.into_iter().next().map(|(_, v)| v),
            )),
            other => other,
        };
        let op = &mut self.history[idx];
        op.completed = Some(self.now);
        op.outcome = OpOutcome::Done(result);
        let client = op.client;
        if client == super::scans::LOADER {
            self.loader_done(idx);
        } else if !op.repair_pass {
            self.client_backoff(client);
        }
    }

    /// The client thinks (or, after a refusal, backs off) before its next
    /// operation, so that a cluster that is down does not use up its work.
    pub(super) fn client_backoff(&mut self, client: usize) {
        let think = self
            .rng
            .random_range(0..=self.scenario.think_time.as_micros() as u64);
        self.schedule(
            self.now + Duration::from_micros(think),
            Event::ClientNext { client },
        );
    }

    pub(super) fn issue(
        &mut self,
        client: usize,
        node: usize,
        kind: OpKind,
        key: Bytes,
        level: Consistency,
        repair_pass: bool,
    ) {
        self.issue_ttl(client, node, kind, key, level, repair_pass, None)
    }

    /// [`Self::issue`], a put carrying `ttl` when given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue_ttl(
        &mut self,
        client: usize,
        node: usize,
        kind: OpKind,
        key: Bytes,
        level: Consistency,
        repair_pass: bool,
        ttl: Option<Duration>,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let row = crate::cluster::cell_row(&key, self.scenario.cell_rows);
        // Cells carry no expiry: a cells scenario has no TTL puts.
        let req = match (&kind, self.scenario.cells, ttl) {
            (OpKind::Get, false, _) => ClientRequest::get(key.clone()),
            (OpKind::Put(v), false, None) => ClientRequest::put(key.clone(), v.clone()),
            (OpKind::Put(v), false, Some(ttl)) => ClientRequest::put_expiring(
                key.clone(),
                v.clone(),
                cassio_core::Expiry::After(u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX)),
            ),
            (OpKind::Delete, false, _) => ClientRequest::delete(key.clone()),
            (OpKind::Get, true, _) if self.rng.random_bool(0.5) => {
                ClientRequest::hget(row, key.clone())
            }
            (OpKind::Get, true, _) => {
                let mut to = key.to_vec();
                to.push(0);
                ClientRequest::read_row(
                    row,
                    cassio_core::RowSlice::Range {
                        from: Some(key.clone()),
                        to: Some(Bytes::from(to)),
                    },
                    10,
                )
            }
            (OpKind::Put(v), true, _) => ClientRequest::hset(row, key.clone(), v.clone()),
            (OpKind::Delete, true, _) => ClientRequest::hdel(row, key.clone()),
            (OpKind::Cas { expected, new }, _, _) => ClientRequest {
                keyspace: cassio_core::DEFAULT_KEYSPACE.to_string(),
                op: cassio_core::ClientOp::Cas {
                    key: key.clone(),
                    expected: expected.clone(),
                    new: new.clone(),
                },
                consistency: None,
            },
            (OpKind::Incr(by), _, _) => ClientRequest {
                keyspace: cassio_core::DEFAULT_KEYSPACE.to_string(),
                op: cassio_core::ClientOp::Incr {
                    key: key.clone(),
                    by: *by,
                },
                consistency: None,
            },
        }
        .with_consistency(level);
        let kind_is_put = matches!(kind, OpKind::Put(_));
        if let OpKind::Put(v) = &kind {
            self.value_owner.insert(v.clone(), self.history.len());
        }
        let paused = self.nodes[node].paused_until > self.now;
        self.history.push(OpRecord {
            client,
            node: self.nodes[node].id,
            key,
            kind,
            ts: None,
            invoked: self.now,
            completed: None,
            outcome: OpOutcome::Pending,
            repair_pass,
            applied: Vec::new(),
            fanned_out: false,
            coordinator_paused: paused,
            ttl: ttl.filter(|_| kind_is_put),
            level: Some(level),
            datacenter: self.scenario.datacenter_of(node).to_string(),
        });
        let idx = self.history.len() - 1;
        if self.nodes[node].node.is_none() {
            self.history[idx].outcome = OpOutcome::Refused;
            self.history[idx].completed = Some(self.now);
            if client == super::scans::LOADER {
                self.loader_done(idx);
            } else if !repair_pass {
                self.client_backoff(client);
            }
            return;
        }
        self.in_flight.insert(id, idx);
        let incarnation = self.nodes[node].incarnation;
        if paused {
            let at = self.nodes[node].paused_until;
            self.schedule(
                at,
                Event::Client {
                    node,
                    incarnation,
                    id,
                    idx,
                    req,
                },
            );
            return;
        }
        self.handle_client(node, id, idx, req);
    }

    pub(super) fn handle_client(
        &mut self,
        node: usize,
        id: RequestId,
        idx: usize,
        req: ClientRequest,
    ) {
        let now = self.now_for(node);
        if let Some(n) = self.nodes[node].node.as_mut() {
            n.handle_client(now, id, req);
        }
        self.capture = Some(idx);
        self.pump(node);
        self.capture = None;
    }

    pub(super) fn client_next(&mut self, client: usize) {
        if self.client_ops_left[client] == 0 || self.now >= self.workload_end {
            return;
        }
        self.client_ops_left[client] -= 1;
        let node = if self.scenario.pin_clients_to_datacenter {
            // A node of the client's datacenter (the `client`-th, in name
            // order, cyclically).
            let dcs: BTreeSet<&str> = (0..self.nodes.len())
                .map(|i| self.scenario.datacenter_of(i))
                .collect();
            let dc = dcs
                .iter()
                .nth(client % dcs.len().max(1))
                .copied()
                .unwrap_or("");
            let local: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.scenario.datacenter_of(i) == dc)
                .collect();
            local[self.rng.random_range(0..local.len())]
        } else {
            self.rng.random_range(0..self.nodes.len())
        };
        let key = Bytes::from(format!("k{}", self.rng.random_range(0..self.scenario.keys)));
        let roll = self.rng.random_range(0..100);
        if self.scenario.craq {
            let kind = self.craq_op(&key, roll);
            let level = if matches!(kind, OpKind::Get) {
                self.scenario.read_cl
            } else {
                self.scenario.write_cl
            };
            return self.issue(client, node, kind, key, level, false);
        }
        let (kind, level) = if roll < 45 {
            (OpKind::Get, self.scenario.read_cl)
        } else if roll < 100 - self.scenario.delete_percent.min(55) {
            (OpKind::Put(self.fresh_value()), self.scenario.write_cl)
        } else {
            (OpKind::Delete, self.scenario.write_cl)
        };
        // Drawn only in scenarios with TTLs, so other scenarios' runs (and
        // their seeds' histories) are unchanged.
        let ttl = (self.scenario.ttl_percent > 0
            && matches!(kind, OpKind::Put(_))
            && self.rng.random_range(0..100) < self.scenario.ttl_percent)
            .then_some(self.scenario.ttl);
        self.issue_ttl(client, node, kind, key, level, false, ttl);
    }

    /// A CRAQ workload's operation on `key`: counters (keys ending in an
    /// odd digit) are read and incremented; registers are read, written,
    /// deleted and compare-and-set against a value written earlier (or
    /// absent).
    fn craq_op(&mut self, key: &Bytes, roll: u32) -> OpKind {
        let counter = key.last().is_some_and(|d| d % 2 == 1);
        if counter {
            return if roll < 50 {
                OpKind::Get
            } else {
                OpKind::Incr(self.rng.random_range(-3..=5))
            };
        }
        if roll < 45 {
            OpKind::Get
        } else if roll < 70 {
            OpKind::Put(self.fresh_value())
        } else if roll < 100 - self.scenario.delete_percent.min(25) {
            // The value expected: one this key was last seen or written
            // with by any client (or absent), so swaps often match.
            let expected = self
                .history
                .iter()
                .rev()
                .filter(|o| o.key == *key)
                .find_map(|o| match (&o.kind, &o.outcome) {
                    (OpKind::Put(v), _) => Some(Some(v.clone())),
                    (OpKind::Cas { new, .. }, _) => Some(Some(new.clone())),
                    (OpKind::Delete, _) => Some(None),
                    (OpKind::Get, OpOutcome::Done(Ok(cassio_core::ClientResponse::Value(v)))) => {
                        Some(v.clone())
                    }
                    _ => None,
                })
                .unwrap_or(None);
            OpKind::Cas {
                expected,
                new: self.fresh_value(),
            }
        } else {
            OpKind::Delete
        }
    }

    pub(super) fn fresh_value(&mut self) -> Bytes {
        let v = Bytes::from(format!("v{}", self.next_value));
        self.next_value += 1;
        v
    }

    /// The nodes a client may trust after healing: running, not leaving,
    /// configured as the cluster is, and whose clock was never an outlier
    /// (see `CLOCK_OUTLIER_MICROS`).
    pub(super) fn regular_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].node.is_some()
                    && !self.nodes[i].left
                    && !self.scenario.rf_overrides.contains_key(&i)
                    && !self.nodes[i].clock_outlier
            })
            .collect()
    }

    pub(super) fn pick_regular(&mut self) -> usize {
        let regular = self.regular_nodes();
        if regular.is_empty() {
            return 0;
        }
        regular[self.rng.random_range(0..regular.len())]
    }

    pub(super) fn keys(&self) -> BTreeSet<Bytes> {
        self.history.iter().map(|o| o.key.clone()).collect()
    }

    /// After faults stop: read every key at ALL from a live node so that read
    /// repair brings every replica to the newest version.
    pub(super) fn repair_pass(&mut self) {
        for key in self.keys() {
            let node = self.pick_regular();
            self.issue(usize::MAX, node, OpKind::Get, key, Consistency::All, true);
        }
    }

    /// The liveness phase: a write of every key, then a read, at the
    /// scenario's levels; each must succeed.
    pub(super) fn liveness(&mut self, writes: bool) {
        for key in self.keys() {
            let node = self.pick_regular();
            if writes {
                let v = self.fresh_value();
                let level = self.scenario.write_cl;
                self.issue(usize::MAX, node, OpKind::Put(v), key, level, true);
            } else {
                let level = self.scenario.read_cl;
                self.issue(usize::MAX, node, OpKind::Get, key, level, true);
            }
        }
    }
}
