//! The scan workload (see `Scenario::scan`): a loader writes distinct keys
//! once each (and deletes some of them after their write was
//! acknowledged); once every one of its requests was answered, a scanner
//! pages through the whole keyspace again and again, under the
//! scenario's faults, retrying a failed page with the same cursor on
//! another node. Each finished pass goes to the outcome for the checker.

use super::{Event, SimCluster};
use crate::cluster::history::{OpKind, OpOutcome, ScanPass};
use bytes::Bytes;
use cassio_core::{ClientError, ClientRequest, ClientResponse, RequestId, ScanCursor};
use rand::Rng;
use std::time::Duration;

/// The history's client number of the loader's operations.
pub(crate) const LOADER: usize = usize::MAX - 1;

/// The scanner's state.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    /// Loader requests not yet answered.
    pub loading: usize,
    /// The page in flight: its request id, and when it is given up.
    pub in_flight: Option<RequestId>,
    /// The pass under way: where the next page starts, what it returned.
    pub pass: Option<(ScanCursor, ScanPass)>,
    /// Finished passes.
    pub done: Vec<ScanPass>,
}

/// How long the scanner waits for an answer before it gives a page up
/// (the coordinator may have crashed) and retries elsewhere.
const PAGE_PATIENCE: Duration = Duration::from_secs(5);

impl SimCluster<'_> {
    /// Issues every loader write at once, on random nodes.
    pub(super) fn start_loader(&mut self) {
        let Some(plan) = self.scenario.scan.clone() else {
            return;
        };
        // Held while issuing, so answers that come at once (a refusal)
        // cannot make the loader look done before it issued everything.
        self.scanner.loading += 1;
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some())
            .collect();
        if running.is_empty() {
            self.scanner.loading -= 1;
            return self.maybe_start_scanning();
        }
        for i in 0..plan.keys {
            let node = running[self.rng.random_range(0..running.len())];
            let v = self.fresh_value();
            let key = Bytes::from(format!("s{i:05}"));
            self.scanner.loading += 1;
            self.issue(
                LOADER,
                node,
                OpKind::Put(v),
                key,
                self.scenario.write_cl,
                false,
            );
        }
        self.scanner.loading -= 1;
        self.maybe_start_scanning();
    }

    /// Starts the first pass once every loader request was answered.
    fn maybe_start_scanning(&mut self) {
        if self.scanner.loading == 0 && self.scanner.pass.is_none() {
            self.scanner.pass = Some((ScanCursor::start(), self.new_pass()));
            self.schedule(self.now, Event::ScanNext);
        }
    }

    /// A loader request was answered (or refused): delete the keys picked
    /// for deletion once their write is acknowledged; start scanning once
    /// the loader is done.
    pub(super) fn loader_done(&mut self, idx: usize) {
        self.scanner.loading = self.scanner.loading.saturating_sub(1);
        let Some(plan) = self.scenario.scan.clone() else {
            return;
        };
        let op = &self.history[idx];
        let acked_put =
            matches!(op.kind, OpKind::Put(_)) && matches!(op.outcome, OpOutcome::Done(Ok(_)));
        let picked = op
            .key
            .get(1..)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n % 100 < plan.delete_percent);
        if acked_put && picked {
            let key = op.key.clone();
            let running: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].node.is_some())
                .collect();
            if running.is_empty() {
                return self.maybe_start_scanning();
            }
            let node = running[self.rng.random_range(0..running.len())];
            self.scanner.loading += 1;
            self.issue(
                LOADER,
                node,
                OpKind::Delete,
                key,
                self.scenario.write_cl,
                false,
            );
        }
        self.maybe_start_scanning();
    }

    fn new_pass(&self) -> ScanPass {
        ScanPass {
            started: self.now,
            completed: None,
            entries: Vec::new(),
            pages: 0,
            failed_pages: 0,
        }
    }

    /// Sends the pass's next page to a running node that is not paused.
    pub(super) fn scan_next(&mut self) {
        if self.now >= self.workload_end || self.scanner.in_flight.is_some() {
            return;
        }
        let Some((cursor, _)) = self.scanner.pass.as_ref() else {
            return;
        };
        let from = cursor.clone();
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some() && self.nodes[i].paused_until <= self.now)
            .collect();
        if candidates.is_empty() {
            self.schedule(self.now + Duration::from_millis(200), Event::ScanNext);
            return;
        }
        let node = candidates[self.rng.random_range(0..candidates.len())];
        let Some(plan) = self.scenario.scan.clone() else {
            return;
        };
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let mut req =
            ClientRequest::scan(Bytes::new(), plan.page).with_consistency(self.scenario.read_cl);
        if let cassio_core::ClientOp::Scan { from: f, .. } = &mut req.op {
            *f = from;
        }
        self.scanner.in_flight = Some(id);
        self.schedule(self.now + PAGE_PATIENCE, Event::ScanGiveUp { id });
        let now = self.now_for(node);
        if let Some(n) = self.nodes[node].node.as_mut() {
            n.handle_client(now, id, req);
        }
        self.pump(node);
    }

    /// Whether `id` is the scanner's page in flight.
    pub(super) fn is_scan_request(&self, id: RequestId) -> bool {
        self.scanner.in_flight == Some(id)
    }

    /// The page in flight was answered.
    pub(super) fn scan_answered(&mut self, result: Result<ClientResponse, ClientError>) {
        self.scanner.in_flight = None;
        let Some((cursor, pass)) = self.scanner.pass.as_mut() else {
            return;
        };
        match result {
            Ok(ClientResponse::Page { entries, next }) => {
                pass.pages += 1;
                pass.entries.extend(entries);
                match next {
                    Some(c) => *cursor = c,
                    None => {
                        let mut pass = std::mem::take(pass);
                        pass.completed = Some(self.now);
                        self.scanner.done.push(pass);
                        let fresh = self.new_pass();
                        self.scanner.pass = Some((ScanCursor::start(), fresh));
                    }
                }
                self.schedule(self.now + Duration::from_millis(5), Event::ScanNext);
            }
            _ => {
                // Retry the same cursor, elsewhere, after a short back-off.
                pass.failed_pages += 1;
                self.schedule(self.now + Duration::from_millis(100), Event::ScanNext);
            }
        }
    }

    /// The page `id` got no answer in time (its coordinator crashed).
    pub(super) fn scan_give_up(&mut self, id: RequestId) {
        if self.scanner.in_flight == Some(id) {
            self.scan_answered(Err(ClientError::ShuttingDown));
        }
    }
}
