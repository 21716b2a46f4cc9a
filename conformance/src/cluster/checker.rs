//! Judges a recorded history against the guarantees Cassio promises. Every
//! judgement uses only what an outside observer saw: the virtual times at
//! which clients invoked operations and received answers, and the
//! simulator's delivery log (when a store executed a write). The
//! timestamps the system assigned itself are never trusted; a system whose
//! clocks lie must fail here.
//!
//! 1. Real-time order (R + W > N): a successful read invoked after an
//!    acknowledged write `w2` completed must not return the value of a write
//!    `w1` whose acknowledgement completed before `w2` was invoked
//!    (`w1 acked < w2 invoked < w2 acked < read invoked`). `w2` may be a put
//!    (a stale read) or a delete (a delete undone).
//! 2. An empty read is stale if an acknowledged put completed before the read
//!    was invoked and no delete explains it. A delete explains it only if the
//!    delivery log shows its tombstone executed on some store before the read
//!    completed, and no acknowledged put follows it in real time as in (1).
//! 3. No read returns a value nobody wrote, a value whose put was invoked
//!    after the read completed, or a value no store had applied by then.
//! 4. After faults stop and the network heals, the repair pass (a read at
//!    ALL of every key) succeeds, and the replicas of every key then hold
//!    the same version.
//! 5. Every request is answered within its timeout (unless its coordinator
//!    crashed or was paused); `Unavailable` means nothing was sent.
//!
//! 6. Expiry (puts with a TTL): the value ends TTL after the write's
//!    timestamp, which was issued between the put's invocation and the
//!    first time a store executed it, by a clock that may be off true time
//!    by up to [`Scenario::clock_uncertainty`] (and the reading
//!    coordinator's too). A read invoked later than the first execution +
//!    TTL + twice that uncertainty must not return the value
//!    ([`Violation::ExpiredValueRead`]); an empty read is explained by a
//!    TTL put, like by a delete, once its completion is past the put's
//!    invocation + TTL − twice the uncertainty (before that, the value was
//!    surely live and the read is stale as in 2).
//!
//! Guarantees 1 and 2 hold only when reads and writes overlap (R + W > N);
//! the checker looks for stale reads in every history, so a run at ONE/ONE
//! shows the stale reads that weaker levels allow.

use super::{OpKind, OpOutcome, OpRecord, Scenario, SimOutcome};
use bytes::Bytes;
use cassio_core::{ClientError, ClientResponse, Instant, NodeId};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A broken guarantee, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Guarantees 1 and 2: a read returned something older, in real time,
    /// than an acknowledged put that completed before it began.
    StaleRead {
        /// The read.
        read: String,
        /// The acknowledged put it should have seen.
        write: String,
        /// What the read returned instead (the write, or the delete that
        /// could explain an empty read, or why none could).
        returned: String,
    },
    /// Guarantee 3: a read returned a value nobody wrote, a value from the
    /// future, or a value no store held yet.
    PhantomValue {
        /// The read.
        read: String,
        /// Why the value cannot have been read.
        why: String,
    },
    /// Guarantee 1: a read returned a value that an acknowledged delete,
    /// later in real time, had removed.
    DeleteUndone {
        /// The read that saw the older data.
        read: String,
        /// The acknowledged delete.
        delete: String,
        /// The put whose value came back.
        returned: String,
    },
    /// Guarantee 4: replicas disagree after repair.
    Diverged {
        /// The key.
        key: Bytes,
        /// Each replica's version.
        versions: String,
    },
    /// Guarantee 4: a request of the repair pass (a read at ALL) or of the
    /// liveness phase, after faults stopped and the cluster healed, failed:
    /// the cluster is not live.
    RepairFailed {
        /// The read.
        op: String,
    },
    /// Guarantee 5: a request got no answer although its coordinator stayed
    /// up, or got it later than its timeout.
    Unanswered {
        /// The request.
        op: String,
    },
    /// Guarantee 5: a request was answered `Unavailable` although its
    /// coordinator had sent replica requests or run storage for it.
    UnavailableAfterSending {
        /// The request.
        op: String,
    },
    /// Guarantee 4 without reads: replicas still differed when the
    /// scenario's convergence check ran (faults over, no client requests
    /// for `Scenario::converge_within`, before the repair pass).
    NotConverged {
        /// The key.
        key: Bytes,
        /// Each replica's version (`None`: the node was down).
        versions: String,
    },
    /// A restarted node stayed `Syncing` (left out of reads) for over a
    /// minute after faults allowed it to catch up.
    NeverCaughtUp {
        /// The node.
        node: NodeId,
    },
    /// A node asked to leave never finished leaving (liveness).
    NeverLeft {
        /// The node.
        node: NodeId,
    },
    /// Two nodes used different schemas under one version number: two
    /// versions were minted concurrently and both used.
    SchemaDiverged {
        /// The version.
        version: u64,
        /// The distinct digests seen for it.
        digests: usize,
    },
    /// Two nodes that knew the same schema version placed keys
    /// differently: placement followed something besides the agreed ring.
    PlacementDiverged {
        /// The version.
        version: u64,
        /// How many different placements were seen under it.
        placements: usize,
        /// The nodes seen placing them (one per placement, deduplicated).
        nodes: String,
    },
    /// A keyspace change acknowledged as part of a version is missing
    /// from that version.
    SchemaChangeLost {
        /// The change, as text.
        change: String,
        /// The version it was acknowledged in.
        version: u64,
    },
    /// After faults stopped, the running nodes did not end on one schema
    /// version (liveness).
    SchemaNotConverged {
        /// Each running node's version.
        versions: String,
    },
    /// Guarantee 6: a read returned a value whose TTL had surely passed.
    ExpiredValueRead {
        /// The read.
        read: String,
        /// The put with the TTL.
        put: String,
    },
    /// A node held more hint bytes for one target than the cap.
    HintCapExceeded {
        /// The most held.
        bytes: u64,
        /// The cap.
        cap: u64,
    },
    /// A finished scan pass returned a key twice, missed an acknowledged
    /// and not deleted key, returned an acknowledged delete's key or a
    /// value never written, or no pass finished at all.
    ScanWrong {
        /// Which pass (by index), and what it got wrong.
        what: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StaleRead {
                read,
                write,
                returned,
            } => {
                write!(
                    f,
                    "stale read: {read} missed acknowledged {write}; it returned {returned}"
                )
            }
            Violation::PhantomValue { read, why } => write!(f, "phantom value: {read}: {why}"),
            Violation::DeleteUndone {
                read,
                delete,
                returned,
            } => {
                write!(
                    f,
                    "delete undone: {read} returned {returned} after acknowledged {delete}"
                )
            }
            Violation::Diverged { key, versions } => {
                write!(f, "replicas of {key:?} diverged after repair: {versions}")
            }
            Violation::RepairFailed { op } => {
                write!(
                    f,
                    "request of the repair pass or liveness phase failed after healing: {op}"
                )
            }
            Violation::Unanswered { op } => write!(f, "unanswered or late: {op}"),
            Violation::UnavailableAfterSending { op } => {
                write!(f, "answered Unavailable after sending: {op}")
            }
            Violation::NotConverged { key, versions } => {
                write!(
                    f,
                    "replicas of {key:?} had not converged without reads: {versions}"
                )
            }
            Violation::NeverCaughtUp { node } => {
                write!(f, "node {node} stayed Syncing for over a minute")
            }
            Violation::NeverLeft { node } => {
                write!(f, "node {node} was asked to leave and never announced Left")
            }
            Violation::SchemaDiverged { version, digests } => write!(
                f,
                "schema version {version} was used with {digests} different contents"
            ),
            Violation::PlacementDiverged {
                version,
                placements,
                nodes,
            } => write!(
                f,
                "nodes {nodes} knew schema version {version} and placed keys in {placements} different ways"
            ),
            Violation::SchemaChangeLost { change, version } => write!(
                f,
                "schema change {change} was acknowledged in version {version}, which does not hold it"
            ),
            Violation::SchemaNotConverged { versions } => write!(
                f,
                "the running nodes ended on different schema versions: {versions}"
            ),
            Violation::ExpiredValueRead { read, put } => {
                write!(f, "expired value read: {read} returned the value of {put} after its TTL")
            }
            Violation::ScanWrong { what } => write!(f, "scan: {what}"),
            Violation::HintCapExceeded { bytes, cap } => {
                write!(
                    f,
                    "a node held {bytes} hint bytes for one target, over the cap of {cap}"
                )
            }
        }
    }
}

/// One operation as text, with its invocation and completion times (µs of
/// virtual time) and, for writes, the times a store executed it.
pub fn describe(op: &OpRecord) -> String {
    let kind = match &op.kind {
        OpKind::Get => "get".to_string(),
        OpKind::Put(v) => match op.ttl {
            Some(ttl) => format!("put {v:?} ttl={}ms", ttl.as_millis()),
            None => format!("put {v:?}"),
        },
        OpKind::Delete => "delete".to_string(),
        OpKind::Cas { expected, new } => format!("cas {expected:?} -> {new:?}"),
        OpKind::Incr(by) => format!("incr {by}"),
    };
    let ts = op.ts.map(|t| format!(" ts={t}")).unwrap_or_default();
    let done = op
        .completed
        .map(|c| format!("{}", c.as_micros()))
        .unwrap_or_else(|| "-".into());
    let applied = match op.applied.first() {
        Some(first) if op.kind != OpKind::Get => {
            format!(" applied {}x from @{}", op.applied.len(), first.as_micros())
        }
        _ => String::new(),
    };
    format!(
        "[client {} via {}: {kind} {:?}{ts} @{}..{}{applied} -> {:?}]",
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
            (Some(c), OpOutcome::Done(_)) => {
                !op.coordinator_paused && c - op.invoked > scenario.request_timeout + slack
            }
            _ => false,
        };
        if late {
            violations.push(Violation::Unanswered { op: describe(op) });
        }
        if op.fanned_out
            && matches!(
                op.outcome,
                OpOutcome::Done(Err(ClientError::Unavailable { .. }))
            )
        {
            violations.push(Violation::UnavailableAfterSending { op: describe(op) });
        }
        if op.repair_pass && !matches!(op.outcome, OpOutcome::Done(Ok(_))) {
            violations.push(Violation::RepairFailed { op: describe(op) });
        }
    }
    let uncertainty = scenario.clock_uncertainty() * 2;
    for ops in by_key.values() {
        check_key(scenario, ops, uncertainty, &mut violations);
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
    for (key, versions) in &outcome.unconverged {
        violations.push(Violation::NotConverged {
            key: key.clone(),
            versions: versions.clone(),
        });
    }
    for &node in &outcome.never_caught_up {
        violations.push(Violation::NeverCaughtUp { node });
    }
    for &node in &outcome.never_left {
        violations.push(Violation::NeverLeft { node });
    }
    violations.extend(schema_violations(outcome));
    if scenario.hints.enabled
        && outcome.max_hint_bytes_per_target > scenario.hints.max_bytes_per_target
    {
        violations.push(Violation::HintCapExceeded {
            bytes: outcome.max_hint_bytes_per_target,
            cap: scenario.hints.max_bytes_per_target,
        });
    }
    if scenario.scan.is_some() {
        check_scans(outcome, &mut violations);
    }
    violations
}

/// What a scan must show of one loader key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Its write was acknowledged and no delete was asked: exactly once,
    /// with this value.
    Present(Bytes),
    /// Its delete was acknowledged: never.
    Absent,
    /// Its write or delete failed or went unanswered: at most once, with
    /// a value someone wrote.
    Either(Option<Bytes>),
}

/// Judges the scan workload: every finished pass holds each key at most
/// once, every acknowledged, not deleted key with its value, and no key
/// whose delete was acknowledged. Scans start after every write of the
/// workload was answered, so no key is written during a pass (the
/// liveness phase's writes come after the scans stop).
fn check_scans(outcome: &SimOutcome, violations: &mut Vec<Violation>) {
    let mut expect: BTreeMap<Bytes, Expect> = BTreeMap::new();
    for op in outcome.history.iter().filter(|o| !o.repair_pass) {
        let ok = matches!(op.outcome, OpOutcome::Done(Ok(_)));
        let e = expect.entry(op.key.clone()).or_insert(Expect::Either(None));
        match (&op.kind, ok) {
            (OpKind::Put(v), true) => *e = Expect::Present(v.clone()),
            (OpKind::Put(v), false) => *e = Expect::Either(Some(v.clone())),
            (OpKind::Delete, true) => *e = Expect::Absent,
            (OpKind::Delete, false) => {
                let v = match e {
                    Expect::Present(v) => Some(v.clone()),
                    Expect::Either(v) => v.clone(),
                    Expect::Absent => None,
                };
                *e = Expect::Either(v);
            }
            // Scans run on last-write-wins keyspaces only.
            (OpKind::Get | OpKind::Cas { .. } | OpKind::Incr(_), _) => {}
        }
    }
    if outcome.scans.is_empty() {
        violations.push(Violation::ScanWrong {
            what: "no scan pass finished".into(),
        });
    }
    for (i, pass) in outcome.scans.iter().enumerate() {
        let mut seen: BTreeMap<&Bytes, usize> = BTreeMap::new();
        let mut wrong = Vec::new();
        for (k, v) in &pass.entries {
            *seen.entry(k).or_default() += 1;
            match expect.get(k) {
                None => wrong.push(format!("key {k:?} was never written")),
                Some(Expect::Absent) => wrong.push(format!("deleted key {k:?} returned")),
                Some(Expect::Present(want)) if want != v => {
                    wrong.push(format!("key {k:?} returned {v:?}, not {want:?}"))
                }
                Some(Expect::Either(Some(want))) if want != v => {
                    wrong.push(format!("key {k:?} returned {v:?}, not {want:?}"))
                }
                Some(Expect::Either(None)) => {
                    wrong.push(format!("key {k:?} returned {v:?}, never written"))
                }
                _ => {}
            }
        }
        for (k, n) in &seen {
            if *n > 1 {
                wrong.push(format!("key {k:?} returned {n} times"));
            }
        }
        for (k, e) in &expect {
            if matches!(e, Expect::Present(_)) && !seen.contains_key(k) {
                wrong.push(format!("acknowledged key {k:?} missing"));
            }
        }
        if !wrong.is_empty() {
            violations.push(Violation::ScanWrong {
                what: format!(
                    "pass {i} ({} pages, {} retried, from {} µs): {} problems, first: {}",
                    pass.pages,
                    pass.failed_pages,
                    pass.started.as_micros(),
                    wrong.len(),
                    wrong[..wrong.len().min(3)].join("; ")
                ),
            });
        }
    }
}

/// When the operation was acknowledged as a successful write, if it was.
fn acked_at(op: &OpRecord) -> Option<Instant> {
    match &op.outcome {
        OpOutcome::Done(Ok(ClientResponse::Written { .. })) => op.completed,
        _ => None,
    }
}

/// An acknowledged write that began after `after` and completed before
/// `before` (both strictly), if any: the latest such, for the message.
fn acked_between<'a>(
    writes: &[(&'a OpRecord, Instant)],
    after: Instant,
    before: Instant,
    deletes_count: bool,
) -> Option<&'a OpRecord> {
    writes
        .iter()
        .filter(|(w, acked)| {
            w.invoked > after && *acked < before && (deletes_count || w.kind != OpKind::Delete)
        })
        .max_by_key(|(_, acked)| *acked)
        .map(|(w, _)| *w)
}

/// Whether a TTL put's value may have ended by `at` (true time), given how
/// far clocks may judge time differently (`uncertainty`).
fn may_have_expired(put: &OpRecord, at: Instant, uncertainty: Duration) -> bool {
    put.ttl
        .is_some_and(|ttl| at + uncertainty >= put.invoked + ttl)
}

/// Whether a TTL put's value has surely ended by `at` (true time).
fn surely_expired(put: &OpRecord, at: Instant, uncertainty: Duration) -> bool {
    match (put.ttl, put.applied.first()) {
        (Some(ttl), Some(&first)) => at > first + ttl + uncertainty,
        _ => false,
    }
}

fn check_key(
    scenario: &Scenario,
    ops: &[&OpRecord],
    uncertainty: Duration,
    violations: &mut Vec<Violation>,
) {
    let puts_by_value: BTreeMap<&Bytes, &OpRecord> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Put(v) => Some((v, *op)),
            _ => None,
        })
        .collect();
    let deletes: Vec<&OpRecord> = ops
        .iter()
        .copied()
        .filter(|op| op.kind == OpKind::Delete)
        .collect();
    // Acknowledged writes with the time of their acknowledgement.
    let all_acked: Vec<(&OpRecord, Instant)> = ops
        .iter()
        .filter_map(|op| acked_at(op).map(|t| (*op, t)))
        .collect();

    for read in ops.iter().filter(|op| op.kind == OpKind::Get) {
        let (Some(done), OpOutcome::Done(Ok(ClientResponse::Value(value)))) =
            (read.completed, &read.outcome)
        else {
            continue;
        };
        // Only the writes this read's level promises it sees (a
        // LOCAL_QUORUM read, those of its own datacenter's LOCAL_QUORUM
        // writes and of wider levels).
        let acked: Vec<(&OpRecord, Instant)> = all_acked
            .iter()
            .copied()
            .filter(|(w, _)| {
                scenario.levels_overlap(
                    (w.level, w.datacenter.as_str()),
                    (read.level, read.datacenter.as_str()),
                )
            })
            .collect();
        match value {
            Some(v) => {
                let Some(w1) = puts_by_value.get(v) else {
                    violations.push(Violation::PhantomValue {
                        read: describe(read),
                        why: "no client ever wrote this value".into(),
                    });
                    continue;
                };
                if w1.invoked > done {
                    violations.push(Violation::PhantomValue {
                        read: describe(read),
                        why: format!("its put was invoked after the read: {}", describe(w1)),
                    });
                    continue;
                }
                if !w1.applied.iter().any(|&t| t <= done) {
                    violations.push(Violation::PhantomValue {
                        read: describe(read),
                        why: format!(
                            "no store had executed its put when the read completed: {}",
                            describe(w1)
                        ),
                    });
                    continue;
                }
                if surely_expired(w1, read.invoked, uncertainty) {
                    violations.push(Violation::ExpiredValueRead {
                        read: describe(read),
                        put: describe(w1),
                    });
                    continue;
                }
                // Only an acknowledged w1 has a place in real time; a failed
                // or unanswered put may take effect at any later moment.
                let Some(w1_acked) = acked_at(w1) else {
                    continue;
                };
                if let Some(w2) = acked_between(&acked, w1_acked, read.invoked, true) {
                    if w2.kind == OpKind::Delete {
                        violations.push(Violation::DeleteUndone {
                            read: describe(read),
                            delete: describe(w2),
                            returned: describe(w1),
                        });
                    } else {
                        violations.push(Violation::StaleRead {
                            read: describe(read),
                            write: describe(w2),
                            returned: describe(w1),
                        });
                    }
                }
            }
            None => {
                // The newest put acknowledged before the read began; with none,
                // an empty read is what a never-written key returns.
                let Some(&(latest_put, _)) = acked
                    .iter()
                    .filter(|(w, t)| w.kind != OpKind::Delete && *t < read.invoked)
                    .max_by_key(|(_, t)| *t)
                else {
                    continue;
                };
                // Deletes whose tombstone some store executed before the read
                // completed, and TTL puts executed by then whose value may
                // have ended by then: only they can explain the empty answer.
                let explaining: Vec<&OpRecord> = deletes
                    .iter()
                    .copied()
                    .chain(
                        ops.iter()
                            .copied()
                            .filter(|p| may_have_expired(p, done, uncertainty)),
                    )
                    .filter(|d| d.applied.iter().any(|&t| t <= done))
                    .collect();
                if explaining.is_empty() {
                    violations.push(Violation::StaleRead {
                        read: describe(read),
                        write: describe(latest_put),
                        returned: "nothing, and no delete of the key had executed on any store"
                            .into(),
                    });
                    continue;
                }
                // Some explaining delete must not be followed, in real time,
                // by an acknowledged put that completed before the read.
                let mut blocked = None;
                // (A put that may itself have expired by the read does not
                // block: it explains the empty answer on its own.)
                let live_puts: Vec<(&OpRecord, Instant)> = acked
                    .iter()
                    .copied()
                    .filter(|(w, _)| !may_have_expired(w, done, uncertainty))
                    .collect();
                let explained = explaining.iter().any(|d| match acked_at(d) {
                    None => true,
                    Some(d_acked) => {
                        match acked_between(&live_puts, d_acked, read.invoked, false) {
                            None => true,
                            Some(w2) => {
                                blocked = Some((*d, w2));
                                false
                            }
                        }
                    }
                });
                if !explained {
                    if let Some((d, w2)) = blocked {
                        violations.push(Violation::StaleRead {
                            read: describe(read),
                            write: describe(w2),
                            returned: format!("nothing, as after {}", describe(d)),
                        });
                    }
                }
            }
        }
    }
}

/// The schema's guarantees: one content per version, every acknowledged
/// change in the version it was acknowledged in, one final version.
fn schema_violations(outcome: &SimOutcome) -> Vec<Violation> {
    use cassio_core::schema::SchemaChange;
    let mut violations = Vec::new();
    let mut by_version: BTreeMap<u64, Vec<&cassio_core::schema::Schema>> = BTreeMap::new();
    for (_, s) in &outcome.schema_adopted {
        by_version.entry(s.version).or_default().push(s);
    }
    for (&version, schemas) in &by_version {
        let digests: std::collections::BTreeSet<u64> = schemas.iter().map(|s| s.digest()).collect();
        if digests.len() > 1 {
            violations.push(Violation::SchemaDiverged {
                version,
                digests: digests.len(),
            });
        }
    }
    let mut placed: BTreeMap<(u64, u64), Vec<NodeId>> = BTreeMap::new();
    for &(version, digest, _, node) in &outcome.placements {
        placed.entry((version, digest)).or_default().push(node);
    }
    for ((version, _), mut nodes) in placed {
        if nodes.len() > 1 {
            let placements = nodes.len();
            nodes.sort();
            nodes.dedup();
            violations.push(Violation::PlacementDiverged {
                version,
                placements,
                nodes: nodes
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    for (change, answer) in &outcome.schema_changes {
        let Some(Ok(version)) = answer else { continue };
        let Some(schemas) = by_version.get(version) else {
            violations.push(Violation::SchemaChangeLost {
                change: format!("{change:?}"),
                version: *version,
            });
            continue;
        };
        let holds = |s: &cassio_core::schema::Schema| match change {
            SchemaChange::Create {
                name,
                replication_factor,
                ..
            } => s
                .keyspace(name)
                .is_some_and(|k| k.config.replication_factor == *replication_factor),
            SchemaChange::Alter {
                name,
                replication_factor,
                ..
            } => s.keyspace(name).is_some_and(|k| {
                replication_factor.is_none_or(|rf| k.config.replication_factor == rf)
            }),
            SchemaChange::Drop { name } => s.keyspace(name).is_none(),
            SchemaChange::SetVoters(v) => &s.voters == v,
            SchemaChange::Claim { voters, ring, .. } => {
                &s.voters == voters && s.ring.as_ref() == Some(ring)
            }
            SchemaChange::CreatePlaced {
                name, replication, ..
            }
            | SchemaChange::AlterReplication { name, replication } => s
                .keyspace(name)
                .is_some_and(|k| k.config.replication().total() == replication.total()),
            SchemaChange::CreateCraq {
                name,
                replication_factor,
            } => s.keyspace(name).is_some_and(|k| {
                k.config.replication_factor == *replication_factor
                    && k.config.strategy == cassio_core::ReplicationStrategy::Craq
            }),
            SchemaChange::ChainMember { node, state, .. } => {
                s.chain.state(*node) == *state && s.chain.epoch == s.version
            }
        };
        if !schemas.iter().all(|s| holds(s)) {
            violations.push(Violation::SchemaChangeLost {
                change: format!("{change:?}"),
                version: *version,
            });
        }
    }
    let finals: std::collections::BTreeSet<u64> = outcome
        .final_schema_versions
        .iter()
        .map(|(_, v)| *v)
        .collect();
    if finals.len() > 1 {
        violations.push(Violation::SchemaNotConverged {
            versions: outcome
                .final_schema_versions
                .iter()
                .map(|(id, v)| format!("{id}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::{Consistency, Timestamp};

    fn op(kind: OpKind, level: Consistency, dc: &str, t: (u64, u64)) -> OpRecord {
        let outcome = match &kind {
            OpKind::Get => OpOutcome::Done(Ok(ClientResponse::Value(None))),
            _ => OpOutcome::Done(Ok(ClientResponse::Written {
                ts: Timestamp::new(t.0, 0, NodeId(1)),
            })),
        };
        OpRecord {
            client: 0,
            node: NodeId(1),
            key: Bytes::from_static(b"k"),
            kind,
            ts: None,
            invoked: Instant::from_micros(t.0),
            completed: Some(Instant::from_micros(t.1)),
            outcome,
            repair_pass: false,
            applied: vec![Instant::from_micros(t.0 + 1)],
            fanned_out: true,
            coordinator_paused: false,
            ttl: None,
            level: Some(level),
            datacenter: dc.into(),
        }
    }

    fn two_dcs() -> Scenario {
        super::super::nemesis::two_datacenters("t", Consistency::LocalQuorum)
    }

    /// Violations of an acknowledged put at `write` in `write_dc`, then an
    /// empty read at LOCAL_QUORUM in dc1.
    fn judged(write: Consistency, write_dc: &str) -> Vec<Violation> {
        let put = op(
            OpKind::Put(Bytes::from_static(b"v")),
            write,
            write_dc,
            (10, 20),
        );
        let read = op(OpKind::Get, Consistency::LocalQuorum, "dc1", (30, 40));
        let mut v = Vec::new();
        check_key(&two_dcs(), &[&put, &read], Duration::ZERO, &mut v);
        v
    }

    #[test]
    fn a_local_read_is_judged_only_against_writes_its_level_overlaps() {
        use Consistency::{EachQuorum, LocalQuorum, Quorum};
        // Another datacenter's LOCAL_QUORUM write, or a global QUORUM one,
        // may be unseen by a LOCAL_QUORUM read.
        assert!(judged(LocalQuorum, "dc2").is_empty());
        assert!(judged(Quorum, "dc2").is_empty());
        // Its own datacenter's LOCAL_QUORUM write, and an EACH_QUORUM write
        // from anywhere, must be seen.
        for (level, dc) in [(LocalQuorum, "dc1"), (EachQuorum, "dc2")] {
            let v = judged(level, dc);
            assert!(
                matches!(v[..], [Violation::StaleRead { .. }]),
                "{level} in {dc}: {v:?}"
            );
        }
        // Without datacenters every pair is judged, as before.
        let mut plain = two_dcs();
        plain.datacenters.clear();
        let put = op(
            OpKind::Put(Bytes::from_static(b"v")),
            LocalQuorum,
            "dc2",
            (10, 20),
        );
        let read = op(OpKind::Get, LocalQuorum, "dc1", (30, 40));
        let mut v = Vec::new();
        check_key(&plain, &[&put, &read], Duration::ZERO, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
    }
}
