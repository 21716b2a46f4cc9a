//! Judges a recorded history against the guarantees Cassio promises:
//!
//! 1. With R + W > N, a read that begins after a write was acknowledged
//!    returns that write's value or a version with a higher timestamp.
//! 2. No read returns a value that was never written.
//! 3. An acknowledged delete is not undone by older data.
//! 4. After faults stop and the network heals, the replicas of every key
//!    hold the same version once reads have repaired them.
//!
//! Also: every request is answered (no hangs) within its timeout, unless its
//! coordinator crashed first.
//!
//! Guarantee 1 holds only when reads and writes overlap (R + W > N); the
//! checker looks for stale reads in every history, so a run at ONE/ONE shows
//! the stale reads that weaker levels allow.

use super::{OpKind, OpOutcome, OpRecord, Scenario, SimOutcome};
use bytes::Bytes;
use cassio_core::{ClientResponse, Timestamp};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A broken guarantee, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Guarantee 1: a read missed an acknowledged write.
    StaleRead {
        /// The read.
        read: String,
        /// The acknowledged write it should have seen.
        write: String,
    },
    /// Guarantee 2: a read returned a value nobody wrote.
    PhantomValue {
        /// The read.
        read: String,
    },
    /// Guarantee 3: an acknowledged delete was undone by older data.
    DeleteUndone {
        /// The read that saw the older data.
        read: String,
        /// The acknowledged delete.
        delete: String,
    },
    /// Guarantee 4: replicas disagree after repair.
    Diverged {
        /// The key.
        key: Bytes,
        /// Each replica's version.
        versions: String,
    },
    /// A request got no answer although its coordinator stayed up, or got
    /// it later than its timeout.
    Unanswered {
        /// The request.
        op: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StaleRead { read, write } => {
                write!(f, "stale read: {read} missed acknowledged {write}")
            }
            Violation::PhantomValue { read } => write!(f, "phantom value: {read}"),
            Violation::DeleteUndone { read, delete } => {
                write!(f, "delete undone: {read} after acknowledged {delete}")
            }
            Violation::Diverged { key, versions } => {
                write!(f, "replicas of {key:?} diverged after repair: {versions}")
            }
            Violation::Unanswered { op } => write!(f, "unanswered or late: {op}"),
        }
    }
}

fn describe(op: &OpRecord) -> String {
    let kind = match &op.kind {
        OpKind::Get => "get".to_string(),
        OpKind::Put(v) => format!("put {v:?}"),
        OpKind::Delete => "delete".to_string(),
    };
    let ts = op.ts.map(|t| format!(" ts={t}")).unwrap_or_default();
    let done = op
        .completed
        .map(|c| format!("{}", c.as_micros()))
        .unwrap_or_else(|| "-".into());
    format!(
        "[client {} via {}: {kind} {:?}{ts} @{}..{} -> {:?}]",
        op.client,
        op.node,
        op.key,
        op.invoked.as_micros(),
        done,
        op.outcome
    )
}

/// Checks `outcome` (a run of `scenario`) and returns every violation found.
pub fn check(scenario: &Scenario, outcome: &SimOutcome) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut by_key: BTreeMap<&Bytes, Vec<&OpRecord>> = BTreeMap::new();
    for op in &outcome.history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let slack = Duration::from_millis(50);
    for op in &outcome.history {
        let late = match (op.completed, &op.outcome) {
            (_, OpOutcome::Pending) => true,
            (Some(c), OpOutcome::Done(_)) => c - op.invoked > scenario.request_timeout + slack,
            _ => false,
        };
        if late {
            violations.push(Violation::Unanswered { op: describe(op) });
        }
    }
    for ops in by_key.values() {
        check_key(ops, &mut violations);
    }
    for (key, versions) in &outcome.replicas {
        let first = versions.first().map(|(_, v)| v);
        if versions.iter().any(|(_, v)| Some(v) != first) {
            let text: Vec<String> = versions
                .iter()
                .map(|(n, v)| match v {
                    Some(v) => format!("{n}={}:{:?}", v.ts, v.value),
                    None => format!("{n}=absent"),
                })
                .collect();
            violations.push(Violation::Diverged {
                key: key.clone(),
                versions: text.join(", "),
            });
        }
    }
    violations
}

fn acked_ts(op: &OpRecord) -> Option<Timestamp> {
    match &op.outcome {
        OpOutcome::Done(Ok(ClientResponse::Written { ts })) => Some(*ts),
        _ => None,
    }
}

fn check_key(ops: &[&OpRecord], violations: &mut Vec<Violation>) {
    // Every write that may have reached a replica, by value.
    let mut value_ts: BTreeMap<&Bytes, (&OpRecord, Timestamp)> = BTreeMap::new();
    // A coordinator may re-stamp a write above a newer version; the stamp
    // it acknowledged is the one that counts.
    for op in ops {
        if let (OpKind::Put(v), Some(ts)) = (&op.kind, acked_ts(op).or(op.ts)) {
            value_ts.insert(v, (op, ts));
        }
    }
    let deletes: Vec<(&OpRecord, Timestamp)> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Delete)
        .filter_map(|op| acked_ts(op).or(op.ts).map(|ts| (*op, ts)))
        .collect();
    let acked: Vec<(&OpRecord, Timestamp)> = ops
        .iter()
        .filter_map(|op| acked_ts(op).map(|ts| (*op, ts)))
        .collect();

    for read in ops.iter().filter(|op| op.kind == OpKind::Get) {
        let (Some(done), OpOutcome::Done(Ok(ClientResponse::Value(value)))) =
            (read.completed, &read.outcome)
        else {
            continue;
        };
        // The timestamp of the version the read returned.
        let returned_ts = match value {
            Some(v) => match value_ts.get(v) {
                Some((w, ts)) if w.invoked <= done => Some(*ts),
                _ => {
                    violations.push(Violation::PhantomValue {
                        read: describe(read),
                    });
                    continue;
                }
            },
            // Absent: the newest delete that could explain it, if any.
            None => deletes
                .iter()
                .filter(|(d, _)| d.invoked <= done)
                .map(|(_, ts)| *ts)
                .max(),
        };
        for (w, wts) in &acked {
            let Some(w_done) = w.completed else { continue };
            if w_done >= read.invoked {
                continue;
            }
            if returned_ts.is_some_and(|r| r >= *wts) {
                continue;
            }
            if w.kind == OpKind::Delete {
                violations.push(Violation::DeleteUndone {
                    read: describe(read),
                    delete: describe(w),
                });
            } else {
                violations.push(Violation::StaleRead {
                    read: describe(read),
                    write: describe(w),
                });
            }
        }
    }
}
