//! Judging a history recorded by clients of a real cluster (the multi-host
//! nemesis in `cassio-node/tests/netns_nemesis.rs`), read from a JSON-lines
//! file.
//!
//! The rules are the simulator checker's ([`crate::cluster::checker`]), on
//! what a client outside the cluster sees and nothing more: the monotonic
//! times at which it invoked each operation and got its answer, the values
//! it wrote (unique per put) and the answers. A real cluster has no
//! delivery log telling when a store executed a write, so where the
//! simulator asks "had a store executed it by then?", this checker can
//! only ask "had a client sent it by then?", which is weaker but never
//! wrong. The simulator's checker is untouched; this is a separate entry
//! point.
//!
//! 1. Stale read: a read that returned the value of acknowledged put `w1`
//!    while an acknowledged write `w2` (put) ran entirely between `w1`'s
//!    acknowledgement and the read's invocation
//!    (`w1 acked < w2 invoked < w2 acked < read invoked`).
//! 2. Delete undone: as 1, with `w2` an acknowledged delete.
//! 3. An empty read after an acknowledged put that completed before the
//!    read began is stale unless some delete of the key, invoked before
//!    the read completed, explains it, and no acknowledged put follows that
//!    delete in real time before the read.
//! 4. Phantom value: a read returned a value no put wrote, or whose put was
//!    invoked only after the read completed.
//! 5. Final reads (after faults stopped and the cluster healed): they must
//!    succeed, and rules 1 to 3 on them are reported as a lost acknowledged
//!    write.
//!
//! Operations whose outcome is an error or a timeout are indeterminate:
//! their effect may appear at any later moment, or never.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A read.
    Get,
    /// A write of `value`.
    Put,
    /// A delete.
    Delete,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A put or delete was acknowledged.
    Ok,
    /// A read returned this value.
    Value(String),
    /// A read found no value.
    NotFound,
    /// The node answered an error (the operation may or may not have
    /// taken effect).
    Error(String),
    /// No answer within the client's timeout, or the connection broke.
    Timeout,
}

/// One operation of the history: one JSON line of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The client (thread) that issued it.
    pub client: u32,
    /// The node it was sent to (its address).
    pub node: String,
    /// The operation.
    pub op: Op,
    /// The key.
    pub key: String,
    /// For puts: the value written, unique across the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it was sent: microseconds of a monotonic clock.
    pub invoked_us: u64,
    /// When its answer (or its timeout) came, same clock.
    pub completed_us: u64,
    /// The answer.
    pub outcome: Outcome,
    /// One of the final reads, after faults stopped and the cluster healed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_read: bool,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (&self.op, &self.value) {
            (Op::Put, Some(v)) => format!("put {v:?}"),
            (Op::Put, None) => "put ?".into(),
            (Op::Get, _) => "get".into(),
            (Op::Delete, _) => "delete".into(),
        };
        write!(
            f,
            "[client {} via {}: {op} {:?} @{}..{}us -> {:?}{}]",
            self.client,
            self.node,
            self.key,
            self.invoked_us,
            self.completed_us,
            self.outcome,
            if self.final_read { " (final)" } else { "" }
        )
    }
}

/// A broken guarantee, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Rules 1 and 3: a read missed an acknowledged put that completed
    /// before it began.
    StaleRead {
        /// The read.
        read: String,
        /// The acknowledged put it should have seen.
        write: String,
        /// What it returned instead.
        returned: String,
    },
    /// Rule 2: a read returned a value an acknowledged delete had removed.
    DeleteUndone {
        /// The read.
        read: String,
        /// The acknowledged delete.
        delete: String,
        /// The put whose value came back.
        returned: String,
    },
    /// Rule 4: a value nobody wrote, or from the future.
    PhantomValue {
        /// The read.
        read: String,
        /// Why the value cannot have been read.
        why: String,
    },
    /// Rule 5: a final read missed an acknowledged write.
    LostWrite {
        /// The final read.
        read: String,
        /// The acknowledged write it missed.
        write: String,
        /// What it returned instead.
        returned: String,
    },
    /// Rule 5: a final read failed although the cluster had healed.
    FinalReadFailed {
        /// The read.
        read: String,
    },
}

impl Violation {
    /// A short name of the kind, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::StaleRead { .. } => "stale_read",
            Violation::DeleteUndone { .. } => "delete_undone",
            Violation::PhantomValue { .. } => "phantom_value",
            Violation::LostWrite { .. } => "lost_write",
            Violation::FinalReadFailed { .. } => "final_read_failed",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StaleRead {
                read,
                write,
                returned,
            } => write!(
                f,
                "stale read: {read} missed acknowledged {write}; it returned {returned}"
            ),
            Violation::DeleteUndone {
                read,
                delete,
                returned,
            } => write!(
                f,
                "delete undone: {read} returned {returned} after acknowledged {delete}"
            ),
            Violation::PhantomValue { read, why } => write!(f, "phantom value: {read}: {why}"),
            Violation::LostWrite {
                read,
                write,
                returned,
            } => write!(
                f,
                "lost acknowledged write: final {read} missed {write}; it returned {returned}"
            ),
            Violation::FinalReadFailed { read } => {
                write!(f, "final read failed after healing: {read}")
            }
        }
    }
}

/// Why a history file could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a [`Record`].
    #[error("{path}:{line}: not a history record: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// A put without a value, or a time running backwards.
    #[error("{path}:{line}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Operation counts and the violations found in a history.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Operations read.
    pub operations: usize,
    /// Per operation kind (`get`, `put`, `delete`): (ok, failed), where ok
    /// is an acknowledgement, a value or not found, and failed an error or
    /// timeout.
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
    /// Every violation found.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Violations per kind.
    pub fn violation_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.kind()).or_default() += 1;
        }
        m
    }
}

/// Reads a JSON-lines history file (one [`Record`] per line; blank lines
/// are skipped).
pub fn read_history(path: &Path) -> Result<Vec<Record>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.to_owned(),
            line: n + 1,
            source,
        })?;
        let invalid = |why: &str| HistoryError::Invalid {
            path: path.to_owned(),
            line: n + 1,
            why: why.to_owned(),
        };
        if r.op == Op::Put && r.value.is_none() {
            return Err(invalid("a put without a value"));
        }
        if r.completed_us < r.invoked_us {
            return Err(invalid("completed before it was invoked"));
        }
        out.push(r);
    }
    Ok(out)
}

/// Reads and judges a history file.
pub fn check_history_file(path: &Path) -> Result<Report, HistoryError> {
    Ok(check_history(&read_history(path)?))
}

/// Judges a history (rules in the module documentation).
pub fn check_history(history: &[Record]) -> Report {
    let mut report = Report {
        operations: history.len(),
        ..Report::default()
    };
    for r in history {
        let name = match r.op {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
        };
        let e = report.by_kind.entry(name).or_default();
        match r.outcome {
            Outcome::Error(_) | Outcome::Timeout => e.1 += 1,
            _ => e.0 += 1,
        }
        if r.final_read && !matches!(r.outcome, Outcome::Value(_) | Outcome::NotFound) {
            report.violations.push(Violation::FinalReadFailed {
                read: r.to_string(),
            });
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in history {
        by_key.entry(&r.key).or_default().push(r);
    }
    for ops in by_key.values() {
        check_key(ops, &mut report.violations);
    }
    report
}

/// When the write was acknowledged, if it was.
fn acked_at(r: &Record) -> Option<u64> {
    (r.op != Op::Get && r.outcome == Outcome::Ok).then_some(r.completed_us)
}

/// The latest acknowledged write invoked after `after` and acknowledged
/// before `before` (both strictly).
fn acked_between<'a>(
    acked: &[(&'a Record, u64)],
    after: u64,
    before: u64,
    deletes_count: bool,
) -> Option<&'a Record> {
    acked
        .iter()
        .filter(|(w, t)| {
            w.invoked_us > after && *t < before && (deletes_count || w.op != Op::Delete)
        })
        .max_by_key(|(_, t)| *t)
        .map(|(w, _)| *w)
}

/// A missed write: a stale read, or a lost write when the read is final.
fn missed(read: &Record, write: &Record, returned: String) -> Violation {
    if read.final_read {
        Violation::LostWrite {
            read: read.to_string(),
            write: write.to_string(),
            returned,
        }
    } else {
        Violation::StaleRead {
            read: read.to_string(),
            write: write.to_string(),
            returned,
        }
    }
}

fn check_key(ops: &[&Record], violations: &mut Vec<Violation>) {
    let puts_by_value: BTreeMap<&str, &Record> = ops
        .iter()
        .filter(|r| r.op == Op::Put)
        .filter_map(|r| r.value.as_deref().map(|v| (v, *r)))
        .collect();
    let deletes: Vec<&Record> = ops.iter().copied().filter(|r| r.op == Op::Delete).collect();
    let acked: Vec<(&Record, u64)> = ops
        .iter()
        .filter_map(|r| acked_at(r).map(|t| (*r, t)))
        .collect();
    for read in ops.iter().filter(|r| r.op == Op::Get) {
        match &read.outcome {
            Outcome::Value(v) => {
                let Some(w1) = puts_by_value.get(v.as_str()) else {
                    violations.push(Violation::PhantomValue {
                        read: read.to_string(),
                        why: "no client ever wrote this value".into(),
                    });
                    continue;
                };
                if w1.invoked_us > read.completed_us {
                    violations.push(Violation::PhantomValue {
                        read: read.to_string(),
                        why: format!("its put was invoked after the read: {w1}"),
                    });
                    continue;
                }
                // A put that failed or timed out may take effect at any
                // later moment: it has no place in real time.
                let Some(w1_acked) = acked_at(w1) else {
                    continue;
                };
                if let Some(w2) = acked_between(&acked, w1_acked, read.invoked_us, true) {
                    if w2.op == Op::Delete {
                        violations.push(Violation::DeleteUndone {
                            read: read.to_string(),
                            delete: w2.to_string(),
                            returned: w1.to_string(),
                        });
                    } else {
                        violations.push(missed(read, w2, w1.to_string()));
                    }
                }
            }
            Outcome::NotFound => {
                let Some(&(latest_put, _)) = acked
                    .iter()
                    .filter(|(w, t)| w.op == Op::Put && *t < read.invoked_us)
                    .max_by_key(|(_, t)| *t)
                else {
                    continue;
                };
                // Without a delivery log, any delete sent before the read
                // completed may have executed in time.
                let explaining: Vec<&Record> = deletes
                    .iter()
                    .copied()
                    .filter(|d| d.invoked_us < read.completed_us)
                    .collect();
                if explaining.is_empty() {
                    violations.push(missed(
                        read,
                        latest_put,
                        "nothing, and no delete of the key had been sent".into(),
                    ));
                    continue;
                }
                let mut blocked = None;
                let explained = explaining.iter().any(|d| match acked_at(d) {
                    None => true,
                    Some(d_acked) => match acked_between(&acked, d_acked, read.invoked_us, false) {
                        None => true,
                        Some(w2) => {
                            blocked = Some((*d, w2));
                            false
                        }
                    },
                });
                if !explained {
                    if let Some((d, w2)) = blocked {
                        violations.push(missed(read, w2, format!("nothing, as after {d}")));
                    }
                }
            }
            Outcome::Ok | Outcome::Error(_) | Outcome::Timeout => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record: `kind` is "put VALUE", "get", "delete".
    fn rec(kind: &str, key: &str, t: (u64, u64), outcome: Outcome) -> Record {
        let (op, value) = match kind.split_once(' ') {
            Some(("put", v)) => (Op::Put, Some(v.to_owned())),
            _ if kind == "get" => (Op::Get, None),
            _ if kind == "delete" => (Op::Delete, None),
            _ => panic!("bad kind {kind}"),
        };
        Record {
            client: 0,
            node: "n1".into(),
            op,
            key: key.into(),
            value,
            invoked_us: t.0,
            completed_us: t.1,
            outcome,
            final_read: false,
        }
    }

    fn val(v: &str) -> Outcome {
        Outcome::Value(v.into())
    }

    fn kinds(h: &[Record]) -> Vec<&'static str> {
        check_history(h)
            .violations
            .iter()
            .map(Violation::kind)
            .collect()
    }

    #[test]
    fn a_linear_history_passes() {
        let h = vec![
            rec("get", "k", (0, 5), Outcome::NotFound),
            rec("put a", "k", (10, 20), Outcome::Ok),
            rec("get", "k", (30, 40), val("a")),
            rec("put b", "k", (50, 60), Outcome::Ok),
            rec("get", "k", (70, 80), val("b")),
            rec("delete", "k", (90, 100), Outcome::Ok),
            rec("get", "k", (110, 120), Outcome::NotFound),
        ];
        let r = check_history(&h);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.operations, 7);
        assert_eq!(r.by_kind["get"], (4, 0));
    }

    #[test]
    fn concurrent_and_indeterminate_operations_pass() {
        let h = vec![
            rec("put a", "k", (0, 10), Outcome::Ok),
            // b overlaps the read: either answer is right.
            rec("put b", "k", (20, 50), Outcome::Ok),
            rec("get", "k", (30, 40), val("a")),
            rec("get", "k", (35, 45), val("b")),
            // A timed-out put may surface later, or never.
            rec("put c", "k", (60, 70), Outcome::Timeout),
            rec("get", "k", (80, 90), val("b")),
            rec("get", "k", (95, 99), val("c")),
            // A failed delete may explain an empty read.
            rec("delete", "k", (100, 110), Outcome::Error("timeout".into())),
            rec("get", "k", (120, 130), Outcome::NotFound),
            // A read concurrent with a delete may see either.
            rec("put d", "k", (140, 150), Outcome::Ok),
            rec("delete", "k", (160, 200), Outcome::Ok),
            rec("get", "k", (170, 180), val("d")),
        ];
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn a_stale_read_fails() {
        let h = vec![
            rec("put a", "k", (0, 10), Outcome::Ok),
            rec("put b", "k", (20, 30), Outcome::Ok),
            rec("get", "k", (40, 50), val("a")),
        ];
        assert_eq!(kinds(&h), vec!["stale_read"]);
    }

    #[test]
    fn an_empty_read_after_an_acknowledged_put_fails() {
        let h = vec![
            rec("put a", "k", (0, 10), Outcome::Ok),
            rec("get", "k", (20, 30), Outcome::NotFound),
        ];
        assert_eq!(kinds(&h), vec!["stale_read"]);
        // A delete that an acknowledged put follows does not explain it.
        let h = vec![
            rec("delete", "k", (0, 5), Outcome::Ok),
            rec("put a", "k", (10, 20), Outcome::Ok),
            rec("get", "k", (30, 40), Outcome::NotFound),
        ];
        assert_eq!(kinds(&h), vec!["stale_read"]);
    }

    #[test]
    fn a_value_back_after_an_acknowledged_delete_fails() {
        let h = vec![
            rec("put a", "k", (0, 10), Outcome::Ok),
            rec("delete", "k", (20, 30), Outcome::Ok),
            rec("get", "k", (40, 50), val("a")),
        ];
        assert_eq!(kinds(&h), vec!["delete_undone"]);
    }

    #[test]
    fn phantom_values_fail() {
        let h = vec![
            rec("get", "k", (0, 10), val("nobody")),
            rec("get", "k", (20, 30), val("later")),
            rec("put later", "k", (40, 50), Outcome::Ok),
        ];
        assert_eq!(kinds(&h), vec!["phantom_value", "phantom_value"]);
    }

    #[test]
    fn final_reads_must_succeed_and_see_acknowledged_writes() {
        let mut lost = rec("get", "k", (40, 50), Outcome::NotFound);
        lost.final_read = true;
        let mut failed = rec("get", "j", (40, 50), Outcome::Timeout);
        failed.final_read = true;
        let h = vec![rec("put a", "k", (0, 10), Outcome::Ok), lost, failed];
        let mut k = kinds(&h);
        k.sort_unstable();
        assert_eq!(k, vec!["final_read_failed", "lost_write"]);
    }

    #[test]
    fn keys_are_judged_apart() {
        let h = vec![
            rec("put a", "k", (0, 10), Outcome::Ok),
            rec("get", "j", (20, 30), Outcome::NotFound),
        ];
        assert_eq!(kinds(&h), Vec::<&str>::new());
    }

    #[test]
    fn the_file_round_trips_and_bad_lines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let h = vec![
            rec("put a", "k", (0, 10), Outcome::Ok),
            rec("get", "k", (20, 30), Outcome::Error("unavailable".into())),
            rec("get", "k", (40, 50), Outcome::NotFound),
        ];
        let text: String = h
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_history(&path).unwrap(), h);
        let r = check_history_file(&path).unwrap();
        assert_eq!(r.violation_counts()["stale_read"], 1);
        assert_eq!(r.by_kind["get"], (1, 1));

        std::fs::write(&path, "{\"client\":0}\n").unwrap();
        assert!(matches!(
            check_history_file(&path),
            Err(HistoryError::Parse { line: 1, .. })
        ));
        let mut backwards = rec("get", "k", (20, 10), Outcome::NotFound);
        backwards.invoked_us = 20;
        std::fs::write(&path, serde_json::to_string(&backwards).unwrap()).unwrap();
        assert!(matches!(
            check_history_file(&path),
            Err(HistoryError::Invalid { line: 1, .. })
        ));
    }
}
