//! What clients did and saw: the history the checker judges.

use bytes::Bytes;
use cassio_core::{ClientError, ClientResponse, Instant, NodeId, Timestamp};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a client operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A read.
    Get,
    /// A write of this value (values are unique across a history).
    Put(Bytes),
    /// A delete.
    Delete,
    /// A compare-and-set (CRAQ keyspaces).
    Cas {
        /// The value required (`None`: absent).
        expected: Option<Bytes>,
        /// The value set if it matches (unique across a history).
        new: Bytes,
    },
    /// An increment (CRAQ keyspaces).
    Incr(i64),
}

/// How a client operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    /// No answer (the coordinator crashed, or the run ended first).
    Pending,
    /// The node was down; nothing was attempted.
    Refused,
    /// The coordinator crashed before answering; the write may or may not
    /// have reached replicas.
    CoordinatorCrashed,
    /// The coordinator answered.
    Done(Result<ClientResponse, ClientError>),
}

/// One client operation in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Which client issued it.
    pub client: usize,
    /// The coordinator it was sent to.
    pub node: NodeId,
    /// The key.
    pub key: Bytes,
    /// The operation.
    pub kind: OpKind,
    /// The timestamp the coordinator gave a write, if it got that far. Kept
    /// for messages only: the checker never judges by it.
    pub ts: Option<Timestamp>,
    /// When it was sent.
    pub invoked: Instant,
    /// When it was answered.
    pub completed: Option<Instant>,
    /// The answer.
    pub outcome: OpOutcome,
    /// Part of the final repair and liveness pass rather than the workload:
    /// it runs after faults stopped and the cluster healed, so it must
    /// succeed.
    pub repair_pass: bool,
    /// For writes: every virtual time at which some store executed an
    /// `Apply` of this write's version (replica writes, the coordinator's
    /// own, and read repairs), from the simulator's delivery log.
    pub applied: Vec<Instant>,
    /// Whether the coordinator sent replica requests or ran storage for
    /// this request while handling it.
    pub fanned_out: bool,
    /// Whether the coordinator was paused while the request was in flight
    /// (its answer may then be late through no fault of the protocol).
    pub coordinator_paused: bool,
    /// For a put with an expiry: its TTL (the value ends this long after
    /// the write's timestamp).
    pub ttl: Option<std::time::Duration>,
    /// The level it asked for (`None`: not a client request, e.g. a
    /// store snapshot judged as a read).
    pub level: Option<cassio_core::Consistency>,
    /// Its coordinator's datacenter.
    pub datacenter: String,
}

/// One pass of the scan workload over the whole keyspace (see
/// `Scenario::scan`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPass {
    /// When its first page was asked for.
    pub started: Instant,
    /// When its last page was answered (`None`: unfinished).
    pub completed: Option<Instant>,
    /// Every entry of every page, in order.
    pub entries: Vec<(Bytes, Bytes)>,
    /// Pages answered.
    pub pages: u32,
    /// Pages that failed (or went unanswered) and were asked again.
    pub failed_pages: u32,
}

/// The result of one simulation.
#[derive(Debug)]
pub struct SimOutcome {
    /// The seed that produced it.
    pub seed: u64,
    /// Every client operation, in invocation order.
    pub history: Vec<OpRecord>,
    /// For each key, each replica's final stored version (after repair).
    pub replicas: BTreeMap<Bytes, Vec<(NodeId, Option<cassio_core::Versioned>)>>,
    /// Frames sent, delivered, dropped.
    pub frames: (u64, u64, u64),
    /// Keys whose replicas differed at the convergence check (before the
    /// repair pass), with each replica's version.
    pub unconverged: Vec<(Bytes, String)>,
    /// Nodes that did not leave `Syncing` within a minute of a restart
    /// (with `snapshot_when_caught_up`).
    pub never_caught_up: Vec<NodeId>,
    /// Nodes asked to leave that had not announced `Left` when the run
    /// ended: their ranges never finished moving.
    pub never_left: Vec<NodeId>,
    /// The most hint bytes any node held for one target, sampled every
    /// second.
    pub max_hint_bytes_per_target: u64,
    /// Every schema version each node adopted, in order.
    pub schema_adopted: Vec<(NodeId, cassio_core::schema::Schema)>,
    /// Every operator schema change and its answer (`None`: unanswered,
    /// or never asked because the node was down).
    pub schema_changes: Vec<(
        cassio_core::schema::SchemaChange,
        Option<Result<u64, cassio_core::ClientError>>,
    )>,
    /// The schema version of each running node at the end of the run.
    pub final_schema_versions: Vec<(NodeId, u64)>,
    /// Where nodes placed a fixed set of probe keys under an agreed ring,
    /// sampled every second and at every adoption: `(version, schema
    /// digest, placement fingerprint, a node that placed them so)`, each
    /// distinct triple once.
    pub placements: Vec<(u64, u64, u64, NodeId)>,
    /// How many times an operator's factor change was refused because the
    /// previous change was not yet repaired everywhere (and retried).
    pub schema_repair_waits: u64,
    /// Finished passes of the scan workload.
    pub scans: Vec<ScanPass>,
}

impl SimOutcome {
    /// The history as text: identical seeds must give identical text.
    pub fn history_text(&self) -> String {
        let mut s = String::new();
        for op in &self.history {
            let _ = writeln!(s, "{op:?}");
        }
        for (k, rs) in &self.replicas {
            let _ = writeln!(s, "{k:?} {rs:?}");
        }
        s
    }

    /// The history as the linearizability checker reads it
    /// ([`crate::linearizability`]): gets, puts and deletes on single keys.
    ///
    /// - An operation refused by a down node, or answered with an error
    ///   by a coordinator that sent nothing and ran no storage for it, had
    ///   no effect and is left out.
    /// - One with no answer (its coordinator crashed, or the run ended),
    ///   or an error after it was sent, has an unknown outcome: it may
    ///   have taken effect at any later time, or never.
    /// - Puts with a TTL are left out (the register model has no expiry).
    ///   In a cells workload each column is a register of its own.
    pub fn linearizability_events(&self) -> Vec<crate::linearizability::Event> {
        use crate::linearizability::{Event, Op, Outcome};
        let mut events = Vec::new();
        for op in &self.history {
            if op.ttl.is_some() {
                continue;
            }
            let kind = match &op.kind {
                OpKind::Get => Op::Read,
                OpKind::Put(v) => Op::Write(v.clone()),
                OpKind::Delete => Op::Delete,
                OpKind::Cas { expected, new } => Op::Cas {
                    expected: expected.clone(),
                    new: new.clone(),
                },
                OpKind::Incr(by) => Op::Incr(*by),
            };
            let outcome = match &op.outcome {
                OpOutcome::Refused => continue,
                OpOutcome::Done(Err(_)) if !op.fanned_out => continue,
                OpOutcome::Done(Ok(ClientResponse::Value(v))) if kind == Op::Read => {
                    Outcome::Value(v.clone())
                }
                OpOutcome::Done(Ok(ClientResponse::Written { .. }))
                    if matches!(kind, Op::Write(_) | Op::Delete) =>
                {
                    Outcome::Ok
                }
                OpOutcome::Done(Ok(ClientResponse::Swapped(s))) => Outcome::Cas(*s),
                OpOutcome::Done(Ok(ClientResponse::Counter(n))) => Outcome::Counter(*n),
                // Refused by the head without effect: not a number.
                OpOutcome::Done(Err(ClientError::InvalidOp(_))) if matches!(kind, Op::Incr(_)) => {
                    Outcome::NotAnInteger
                }
                // Other answers (pages, cells) are not register operations.
                OpOutcome::Done(Ok(_)) => continue,
                OpOutcome::Done(Err(_)) | OpOutcome::Pending | OpOutcome::CoordinatorCrashed => {
                    Outcome::Unknown
                }
            };
            // An answer without a completion time cannot be placed in real
            // time: it counts as unknown.
            let completed = op
                .completed
                .filter(|_| outcome != Outcome::Unknown)
                .map(Instant::as_micros);
            let outcome = if completed.is_some() {
                outcome
            } else {
                Outcome::Unknown
            };
            events.push(Event {
                client: op.client as u64,
                key: op.key.clone(),
                op: kind,
                invoked: op.invoked.as_micros(),
                completed,
                outcome,
            });
        }
        events
    }
}
