//! A per-key linearizability checker: does a history of operations on keys,
//! each seen by a client as an interval of time and an answer, admit a
//! single total order that respects real time and that a register per key
//! would have produced?
//!
//! It judges histories of a strong-consistency replication mode, recorded
//! by the simulator or by clients of real processes; it depends on neither
//! and reads only its own plain types ([`Event`], [`Op`], [`Outcome`]).
//! [`from_real_history`] adapts a [`crate::real_history`] history.
//!
//! # Model
//!
//! Each key is one register whose state is `Option<Bytes>`: absent, or a
//! value. It starts absent. The operations ([`Op`]) and the answers they
//! give ([`Outcome`]):
//!
//! - [`Op::Read`] answers [`Outcome::Value`] with the state;
//! - [`Op::Write`] sets the value and [`Op::Delete`] makes it absent, both
//!   answering [`Outcome::Ok`];
//! - [`Op::Cas`] sets `new` if and only if the state equals `expected`
//!   (`expected: None` meaning "only if absent"), answering
//!   [`Outcome::Cas`]`(swapped)`;
//! - [`Op::Incr`] parses the value as a decimal `i64` (absent counts as 0),
//!   adds its delta, stores the sum in decimal and answers
//!   [`Outcome::Counter`] with it; when the value is not a decimal `i64`,
//!   or the sum overflows, it changes nothing and answers
//!   [`Outcome::NotAnInteger`].
//!
//! # Unknown outcomes
//!
//! [`Outcome::Unknown`] is for an operation whose client got no answer, or
//! an error after which the effect may or may not have happened (a
//! timeout, a crash, a broken connection). Such an operation has no
//! completion time ([`Event::completed`] is `None`): it may take effect at
//! any moment after its invocation, with whatever answer the register
//! would give then, or never. This is the usual treatment (Knossos's
//! `:info`, Porcupine's return at infinity): its return is placed after
//! every other event, and since an operation linearized after everything
//! else is never observed, "never" and "at the very end" are the same.
//!
//! An operation known to have failed *without any effect* (refused before
//! it was sent, or rejected by a node that certainly did not apply it) is
//! not part of the history: leave it out of the input. (An
//! [`Op::Incr`] answered [`Outcome::NotAnInteger`] is different: that
//! answer depends on the state, so it stays and is checked.)
//!
//! # Real time
//!
//! An operation precedes another if it completed strictly before the
//! other was invoked. Operations sharing an instant (one completes at the
//! time the other is invoked) count as concurrent: intervals are closed,
//! which never rejects a linearizable history on the strength of a clock
//! tie. Times are in any monotonic unit, shared by all clients.
//!
//! # Why keys are checked apart
//!
//! Linearizability is local (Herlihy and Wing, 1990): a history is
//! linearizable if and only if, for each object, its sub-history on that
//! object is. Every operation here touches one key, so the history is
//! split by key and each key is checked on its own, which is exponentially
//! cheaper than checking the whole.
//!
//! # Algorithm
//!
//! Per key, the Wing and Gong search, with the memoization of Lowe
//! ("Testing for linearizability", 2017), as Porcupine's `checkSingle`
//! does it. The calls and returns are sorted by time into a doubly linked
//! list. The search walks the list from its head: at a call it tries to
//! linearize that operation next (its answer must be what the register
//! would give in the current state); if so it lifts the call and its
//! return out of the list, pushes the operation on a stack and starts
//! again from the head. Reaching a return means that operation completed
//! before being linearized in this branch, so it backtracks: it pops the
//! last operation, puts its entries back, and tries the call after it. A
//! cache of the configurations already explored, each the set of
//! linearized operations (a bitset) with the register state, prunes every
//! branch that reaches a configuration again: the rest of the search
//! depends on nothing else. The search is a loop over an explicit stack,
//! so a long history cannot overflow the thread's stack. It succeeds once
//! every operation of known outcome is linearized; operations of unknown
//! outcome left over take effect after everything, or never.
//!
//! Operations of unknown outcome never return: they stay candidates from
//! their invocation on, and with plain memoization every subset of them
//! would make configurations of its own. So they have a list of their own
//! (candidates while invoked by the first pending return), and:
//!
//! - From each configuration the candidates of known outcome are tried
//!   first, and those of unknown outcome only then.
//! - The cache prunes a configuration when it holds one with the same
//!   operations of known outcome, the same state and a *subset* of its
//!   unknown operations: that one can do everything this one can,
//!   leaving the extra unknown operations to the end or out. Identical
//!   unknown operations already invoked are interchangeable, so the cache
//!   records only how many of them were linearized. Without unknown
//!   operations, this is Lowe's cache exactly.
//! - An unknown write or delete is not tried right after another unknown
//!   operation (it would hide it: trying it one step earlier covers
//!   that), nor when no operation left could tell the state it makes from
//!   another (no read left returned that value, and no compare-and-swap
//!   or increment is left); of identical unknown candidates only one is
//!   tried.
//! - A read of unknown outcome changes nothing and constrains nothing: it
//!   is left out.
//!
//! Each of these only skips configurations that another one explored can
//! do at least as much as, so the search stays exact; a test checks it
//! against a brute-force enumeration on a thousand small random
//! histories, linearizable or corrupted.
//!
//! # Complexity and budget
//!
//! Checking linearizability is NP-complete in general (Gibbons and
//! Korach, 1997). The cache bounds the work by the number of distinct
//! configurations: about the number of operations, times `2^c` where `c`
//! is how many operations of known outcome overlap at once, times the
//! register states and the subsets of unknown operations that matter.
//! Each step costs `O(n / 64)` for the bitset of `n` operations.
//! Linearizable histories of a few thousand operations per key, with a
//! handful of clients and a few percent of unknown outcomes, take
//! milliseconds. Refuting one explores every configuration: with reads,
//! writes and deletes, still within a few million steps (about a second);
//! with many unknown compare-and-swaps or increments left pending (their
//! subsets each make a state of their own), it can take longer than the
//! budget. A key is cut off by [`Options::max_steps`] (search steps per
//! key) and [`Options::max_cache_bytes`] (memory of the cache per key),
//! and reported as [`Verdict::GaveUp`], distinct from either answer.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// An operation on one key's register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the value; answers [`Outcome::Value`].
    Read,
    /// Set the value; answers [`Outcome::Ok`].
    Write(Bytes),
    /// Make the value absent; answers [`Outcome::Ok`].
    Delete,
    /// Set `new` if and only if the register holds `expected` (`None`:
    /// only if absent); answers [`Outcome::Cas`].
    Cas {
        /// The state required for the swap.
        expected: Option<Bytes>,
        /// The value stored if it swaps.
        new: Bytes,
    },
    /// Add this delta to the value read as a decimal `i64` (absent counts
    /// as 0); answers [`Outcome::Counter`] or [`Outcome::NotAnInteger`].
    Incr(i64),
}

/// The answer a client got.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A write or delete was acknowledged.
    Ok,
    /// A read returned this value (`None`: absent).
    Value(Option<Bytes>),
    /// A compare-and-swap answered whether it swapped.
    Cas(bool),
    /// An increment succeeded; this is the new value.
    Counter(i64),
    /// An increment failed without effect: the value was not a decimal
    /// `i64`, or the sum would overflow.
    NotAnInteger,
    /// No answer, or an error after which the operation may or may not
    /// have taken effect (timeout, crash). It may take effect at any time
    /// after its invocation, or never. Its event has no completion time.
    Unknown,
}

/// One operation of the history, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// The client that issued it (only for the rendering: a client's
    /// operations need not be sequential).
    pub client: u64,
    /// The key: its register.
    pub key: Bytes,
    /// The operation.
    pub op: Op,
    /// When it was invoked, in any monotonic unit shared by all clients.
    pub invoked: u64,
    /// When its answer came; `None` exactly when the outcome is
    /// [`Outcome::Unknown`].
    pub completed: Option<u64>,
    /// The answer.
    pub outcome: Outcome,
}

/// The limits of the search, per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Search steps (list entries visited) after which a key is given up.
    pub max_steps: u64,
    /// Approximate bytes the cache of explored configurations may take
    /// before a key is given up.
    pub max_cache_bytes: usize,
}

impl Default for Options {
    /// Ten million steps and 1 GiB of cache per key.
    fn default() -> Self {
        Options {
            max_steps: 10_000_000,
            max_cache_bytes: 1 << 30,
        }
    }
}

/// Why a history cannot be checked. The index is the event's position in
/// the history given to [`check`] (or the record's, for
/// [`from_real_history`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An event completed before it was invoked.
    #[error("event {index}: completed at {completed}, before its invocation at {invoked}")]
    CompletedBeforeInvoked {
        /// The event's index.
        index: usize,
        /// Its invocation time.
        invoked: u64,
        /// Its completion time.
        completed: u64,
    },
    /// An event has a known outcome but no completion time.
    #[error("event {index}: a known outcome needs a completion time: {event}")]
    KnownWithoutCompletion {
        /// The event's index.
        index: usize,
        /// The event, rendered.
        event: String,
    },
    /// An event of unknown outcome has a completion time.
    #[error("event {index}: an unknown outcome has no completion time: {event}")]
    UnknownWithCompletion {
        /// The event's index.
        index: usize,
        /// The event, rendered.
        event: String,
    },
    /// The outcome is not one the operation can give (a CAS answer to a
    /// read, a value to a write...).
    #[error("event {index}: the outcome does not fit the operation: {event}")]
    OutcomeMismatch {
        /// The event's index.
        index: usize,
        /// The event, rendered.
        event: String,
    },
    /// A put record without its value ([`from_real_history`]).
    #[error("record {index}: a put without a value")]
    PutWithoutValue {
        /// The record's index.
        index: usize,
    },
}

/// Which budget of [`Options`] a key exhausted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// [`Options::max_steps`].
    Steps,
    /// [`Options::max_cache_bytes`].
    Memory,
}

/// Why a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The longest linearizable prefix the search found: indices into the
    /// history, in linearization order.
    pub prefix: Vec<usize>,
    /// The register after that prefix.
    pub register: Option<Bytes>,
    /// The operations of known outcome that real time allowed next after
    /// the prefix, none of which leads to a linearization (nor does any
    /// operation of unknown outcome then pending): indices into the
    /// history.
    pub stuck: Vec<usize>,
    /// The above as text, each operation rendered.
    pub explanation: String,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// The judgement of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key's history is linearizable.
    Linearizable {
        /// One witness: indices into the history in linearization order.
        /// It holds every operation of known outcome and those of
        /// unknown outcome the witness needed; the others took effect
        /// after everything, or never.
        order: Vec<usize>,
    },
    /// No linearization exists.
    NotLinearizable(Counterexample),
    /// The search ran out of its budget: neither answer is known.
    GaveUp {
        /// The budget exhausted.
        exhausted: Budget,
        /// The most operations linearized at once in the search.
        deepest: usize,
    },
}

/// What the checker found for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// The key's operations in the history.
    pub operations: usize,
    /// The search steps taken.
    pub steps: u64,
    /// The judgement.
    pub verdict: Verdict,
}

/// What the checker found, per key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every key of the history.
    pub keys: BTreeMap<Bytes, KeyReport>,
}

impl Report {
    /// Whether every key was found linearizable (a key given up is not).
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .values()
            .all(|k| matches!(k.verdict, Verdict::Linearizable { .. }))
    }

    /// The keys found not linearizable, with why.
    pub fn violations(&self) -> Vec<(&Bytes, &Counterexample)> {
        self.keys
            .iter()
            .filter_map(|(key, k)| match &k.verdict {
                Verdict::NotLinearizable(c) => Some((key, c)),
                _ => None,
            })
            .collect()
    }

    /// The keys the search gave up on.
    pub fn gave_up(&self) -> Vec<&Bytes> {
        self.keys
            .iter()
            .filter(|(_, k)| matches!(k.verdict, Verdict::GaveUp { .. }))
            .map(|(key, _)| key)
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, k) in &self.keys {
            let key = show(key);
            match &k.verdict {
                Verdict::Linearizable { .. } => writeln!(
                    f,
                    "key {key}: linearizable ({} operations, {} steps)",
                    k.operations, k.steps
                )?,
                Verdict::NotLinearizable(c) => writeln!(f, "key {key}: {c}")?,
                Verdict::GaveUp { exhausted, deepest } => writeln!(
                    f,
                    "key {key}: gave up after {} steps ({exhausted:?} budget), \
                     {deepest} of {} operations linearized at most",
                    k.steps, k.operations
                )?,
            }
        }
        Ok(())
    }
}

/// Bytes as a quoted string when they are UTF-8, as a byte string when not.
fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("{:?}", Bytes::copy_from_slice(b)),
    }
}

fn show_state(s: &Option<Bytes>) -> String {
    match s {
        Some(v) => show(v),
        None => "absent".into(),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Value(v) => f.write_str(&show_state(v)),
            Outcome::Cas(true) => f.write_str("swapped"),
            Outcome::Cas(false) => f.write_str("not swapped"),
            Outcome::Counter(n) => write!(f, "{n}"),
            Outcome::NotAnInteger => f.write_str("not an integer"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Event {
    /// For instance `[client 3: read "k" @120..180 -> "v2"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = show(&self.key);
        let op = match &self.op {
            Op::Read => format!("read {key}"),
            Op::Write(v) => format!("write {key} {}", show(v)),
            Op::Delete => format!("delete {key}"),
            Op::Cas { expected, new } => {
                format!("cas {key} from {} to {}", show_state(expected), show(new))
            }
            Op::Incr(d) => format!("incr {key} by {d}"),
        };
        let completed = match self.completed {
            Some(t) => t.to_string(),
            None => "?".into(),
        };
        write!(
            f,
            "[client {}: {op} @{}..{completed} -> {}]",
            self.client, self.invoked, self.outcome
        )
    }
}

/// The register's value read as a counter: absent is 0.
fn counter(state: &Option<Bytes>) -> Option<i64> {
    match state {
        None => Some(0),
        Some(v) => std::str::from_utf8(v).ok()?.parse().ok(),
    }
}

/// What `op` answers in `state`, and the state after it.
fn apply(state: &Option<Bytes>, op: &Op) -> (Outcome, Option<Bytes>) {
    match op {
        Op::Read => (Outcome::Value(state.clone()), state.clone()),
        Op::Write(v) => (Outcome::Ok, Some(v.clone())),
        Op::Delete => (Outcome::Ok, None),
        Op::Cas { expected, new } => {
            if state == expected {
                (Outcome::Cas(true), Some(new.clone()))
            } else {
                (Outcome::Cas(false), state.clone())
            }
        }
        Op::Incr(delta) => match counter(state).and_then(|n| n.checked_add(*delta)) {
            Some(n) => (Outcome::Counter(n), Some(Bytes::from(n.to_string()))),
            None => (Outcome::NotAnInteger, state.clone()),
        },
    }
}

/// Whether the register's answer `model` is consistent with the answer
/// the client saw.
fn fits(model: &Outcome, seen: &Outcome) -> bool {
    *seen == Outcome::Unknown || model == seen
}

/// Whether `op` can ever answer `outcome`.
fn outcome_fits_op(op: &Op, outcome: &Outcome) -> bool {
    matches!(
        (op, outcome),
        (_, Outcome::Unknown)
            | (Op::Read, Outcome::Value(_))
            | (Op::Write(_) | Op::Delete, Outcome::Ok)
            | (Op::Cas { .. }, Outcome::Cas(_))
            | (Op::Incr(_), Outcome::Counter(_) | Outcome::NotAnInteger)
    )
}

/// Checks that every event is well formed.
pub fn validate(history: &[Event]) -> Result<(), HistoryError> {
    for (index, e) in history.iter().enumerate() {
        match (e.completed, &e.outcome) {
            (Some(completed), _) if completed < e.invoked => {
                return Err(HistoryError::CompletedBeforeInvoked {
                    index,
                    invoked: e.invoked,
                    completed,
                })
            }
            (Some(_), Outcome::Unknown) => {
                return Err(HistoryError::UnknownWithCompletion {
                    index,
                    event: e.to_string(),
                })
            }
            (None, o) if *o != Outcome::Unknown => {
                return Err(HistoryError::KnownWithoutCompletion {
                    index,
                    event: e.to_string(),
                })
            }
            _ => {}
        }
        if !outcome_fits_op(&e.op, &e.outcome) {
            return Err(HistoryError::OutcomeMismatch {
                index,
                event: e.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks every key of `history` for linearizability (see the module
/// documentation), within the budget of `options` per key.
pub fn check(history: &[Event], options: Options) -> Result<Report, HistoryError> {
    validate(history)?;
    // Per key: how many operations, and those searched. A read of
    // unknown outcome neither changes the register nor constrains it:
    // it is left out.
    let mut by_key: BTreeMap<&Bytes, (usize, Vec<usize>)> = BTreeMap::new();
    for (i, e) in history.iter().enumerate() {
        let (count, searched) = by_key.entry(&e.key).or_default();
        *count += 1;
        if !(e.op == Op::Read && e.outcome == Outcome::Unknown) {
            searched.push(i);
        }
    }
    let mut report = Report::default();
    for (key, (count, indices)) in by_key {
        let ops: Vec<&Event> = indices.iter().map(|&i| &history[i]).collect();
        let (steps, outcome) = search(&ops, options);
        let verdict = match outcome {
            Search::Linearizable(order) => Verdict::Linearizable {
                order: order.into_iter().map(|i| indices[i]).collect(),
            },
            Search::Stuck(prefix) => {
                Verdict::NotLinearizable(counterexample(key, &ops, &indices, &prefix))
            }
            Search::GaveUp { exhausted, deepest } => Verdict::GaveUp { exhausted, deepest },
        };
        report.keys.insert(
            key.clone(),
            KeyReport {
                operations: count,
                steps,
                verdict,
            },
        );
    }
    Ok(report)
}

/// How the search of one key ended; operations are indices into its ops.
enum Search {
    Linearizable(Vec<usize>),
    /// Not linearizable; the longest linearizable prefix found.
    Stuck(Vec<usize>),
    GaveUp {
        exhausted: Budget,
        deepest: usize,
    },
}

/// An entry of a linked list: the call or the return of an operation, or
/// a sentinel.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    call: bool,
}

/// The head of the list of the calls and returns of the operations of
/// known outcome, by time.
const KNOWN: usize = 0;
/// The head of the list of the calls of the operations of unknown outcome
/// (whose returns would be after everything), by time.
const UNKNOWN: usize = 1;

/// The two lists, between head and tail sentinels, in one arena.
struct Entries {
    nodes: Vec<Node>,
    call_of: Vec<usize>,
    /// `None` for an operation of unknown outcome.
    return_of: Vec<Option<usize>>,
}

impl Entries {
    fn new(ops: &[&Event]) -> Self {
        // Sorted by time; at equal times calls first, so that touching
        // intervals are concurrent.
        let mut known: Vec<(u64, bool, usize)> = Vec::new();
        let mut unknown: Vec<(u64, bool, usize)> = Vec::new();
        for (i, e) in ops.iter().enumerate() {
            match e.completed {
                Some(t) => {
                    known.push((e.invoked, false, i));
                    known.push((t, true, i));
                }
                None => unknown.push((e.invoked, false, i)),
            }
        }
        known.sort_unstable();
        unknown.sort_unstable();
        let sentinel = Node {
            prev: usize::MAX,
            next: usize::MAX,
            op: usize::MAX,
            call: false,
        };
        let mut entries = Entries {
            nodes: vec![sentinel, sentinel],
            call_of: vec![0; ops.len()],
            return_of: vec![None; ops.len()],
        };
        for (head, sorted) in [(KNOWN, known), (UNKNOWN, unknown)] {
            let mut last = head;
            for (_, is_return, op) in sorted {
                let at = entries.nodes.len();
                entries.nodes.push(Node {
                    prev: last,
                    next: usize::MAX,
                    op,
                    call: !is_return,
                });
                entries.nodes[last].next = at;
                if is_return {
                    entries.return_of[op] = Some(at);
                } else {
                    entries.call_of[op] = at;
                }
                last = at;
            }
            let tail = entries.nodes.len();
            entries.nodes.push(Node {
                prev: last,
                next: tail,
                ..sentinel
            });
            entries.nodes[last].next = tail;
        }
        entries
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        self.nodes[next].prev = n;
    }

    /// Takes an operation's call and return out of their list.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if let Some(r) = self.return_of[op] {
            self.unlink(r);
        }
    }

    /// The time of the first return in the known list: the unknown
    /// operations invoked by then are candidates.
    fn horizon(&self, ops: &[&Event]) -> u64 {
        let mut n = self.nodes[KNOWN].next;
        while self.nodes[n].call {
            n = self.nodes[n].next;
        }
        ops.get(self.nodes[n].op)
            .and_then(|e| e.completed)
            .unwrap_or(u64::MAX)
    }

    /// Puts them back (in the reverse order of [`Entries::lift`]).
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_of[op] {
            self.relink(r);
        }
        self.relink(self.call_of[op]);
    }
}

/// The operations linearized so far, as two bitsets: those of known
/// outcome and those of unknown outcome, each numbered apart.
struct Linearized {
    known: Vec<u64>,
    unknown: Vec<u64>,
    /// Per operation: whether its outcome is unknown, and its bit.
    slot: Vec<(bool, usize)>,
}

impl Linearized {
    fn new(ops: &[&Event]) -> Self {
        let (mut known, mut unknown) = (0, 0);
        let slot: Vec<(bool, usize)> = ops
            .iter()
            .map(|e| {
                let n = if e.completed.is_some() {
                    &mut known
                } else {
                    &mut unknown
                };
                *n += 1;
                (e.completed.is_none(), *n - 1)
            })
            .collect();
        Linearized {
            known: vec![0; known.div_ceil(64)],
            unknown: vec![0; unknown.div_ceil(64)],
            slot,
        }
    }

    /// The unknown operations linearized, as the cache records them. The
    /// same operations invoked by `horizon` are interchangeable from here
    /// on (each stays a candidate until linearized), so only how many of
    /// them are linearized matters: those are taken to be the last invoked.
    fn canonical(&self, groups: &[Vec<usize>], ops: &[&Event], horizon: u64) -> Vec<u64> {
        let mut unknown = self.unknown.clone();
        for g in groups {
            let invoked = g.partition_point(|&i| ops[i].invoked <= horizon);
            let used = g[..invoked].iter().filter(|&&i| self.contains(i)).count();
            for (k, &i) in g[..invoked].iter().enumerate() {
                let bit = self.slot[i].1;
                if k >= invoked - used {
                    unknown[bit / 64] |= 1 << (bit % 64);
                } else {
                    unknown[bit / 64] &= !(1 << (bit % 64));
                }
            }
        }
        unknown
    }

    fn contains(&self, op: usize) -> bool {
        let (unknown, bit) = self.slot[op];
        let set = if unknown { &self.unknown } else { &self.known };
        set[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn flip(&mut self, op: usize) {
        let (unknown, bit) = self.slot[op];
        let set = if unknown {
            &mut self.unknown
        } else {
            &mut self.known
        };
        set[bit / 64] ^= 1 << (bit % 64);
    }
}

/// Whether every bit of `a` is set in `b`.
fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// The configurations explored: for each set of known operations
/// linearized, the register states reached with it, each with the sets of
/// unknown operations linearized on the way.
type Cache = HashMap<Box<[u64]>, Vec<(Option<Bytes>, Vec<Box<[u64]>>)>>;

/// Records the configuration (`known`, `unknown`, `state`) in the cache
/// unless it holds one that can do at least as much (the same known
/// operations and state, a subset of the unknown operations); returns
/// whether it recorded it.
fn remember(
    cache: &mut Cache,
    known: &[u64],
    unknown: &[u64],
    state: &Option<Bytes>,
    bytes: &mut usize,
) -> bool {
    let unknown_bytes = 16 + unknown.len() * 8;
    let Some(states) = cache.get_mut(known) else {
        *bytes += 64 + known.len() * 8 + state_bytes(state) + unknown_bytes;
        cache.insert(known.into(), vec![(state.clone(), vec![unknown.into()])]);
        return true;
    };
    let Some((_, subsets)) = states.iter_mut().find(|(s, _)| s == state) else {
        *bytes += state_bytes(state) + unknown_bytes;
        states.push((state.clone(), vec![unknown.into()]));
        return true;
    };
    if subsets.iter().any(|u| subset(u, unknown)) {
        return false;
    }
    *bytes += unknown_bytes;
    subsets.push(unknown.into());
    true
}

/// The operations of unknown outcome that are the same operation, in
/// groups of two or more, each by invocation.
fn groups(ops: &[&Event]) -> Vec<Vec<usize>> {
    let mut by_op: HashMap<&Op, Vec<usize>> = HashMap::new();
    for (i, e) in ops.iter().enumerate() {
        if e.completed.is_none() {
            by_op.entry(&e.op).or_default().push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = by_op.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort_by_key(|&i| (ops[i].invoked, i));
    }
    groups.sort_unstable();
    groups
}

/// For each operation of unknown outcome, the next one of its group by
/// invocation, if any.
fn twins(groups: &[Vec<usize>], ops: usize) -> Vec<Option<usize>> {
    let mut twin = vec![None; ops];
    for g in groups {
        for pair in g.windows(2) {
            twin[pair[0]] = Some(pair[1]);
        }
    }
    twin
}

/// Whether an unknown operation the same as `op` and invoked after it
/// (but by `horizon`) is a candidate too. Only the last invoked such
/// twin need be tried: leaving the earlier ones for later leaves at least
/// as many possibilities.
fn has_later_twin(
    twins: &[Option<usize>],
    ops: &[&Event],
    linearized: &Linearized,
    op: usize,
    horizon: u64,
) -> bool {
    let mut next = twins[op];
    while let Some(t) = next {
        if ops[t].invoked > horizon {
            return false;
        }
        if !linearized.contains(t) {
            return true;
        }
        next = twins[t];
    }
    false
}

/// The operations not yet linearized that can tell one state from
/// another: reads of known outcome by the value they returned, and every
/// compare-and-swap and increment.
struct Observers {
    reads: HashMap<Option<Bytes>, usize>,
    others: usize,
}

impl Observers {
    fn new(ops: &[&Event]) -> Self {
        let mut observers = Observers {
            reads: HashMap::new(),
            others: 0,
        };
        for e in ops {
            observers.put_back(e);
        }
        observers
    }

    fn put_back(&mut self, e: &Event) {
        match (&e.op, &e.outcome) {
            (Op::Read, Outcome::Value(v)) => *self.reads.entry(v.clone()).or_default() += 1,
            (Op::Cas { .. } | Op::Incr(_), _) => self.others += 1,
            _ => {}
        }
    }

    fn take(&mut self, e: &Event) {
        match (&e.op, &e.outcome) {
            (Op::Read, Outcome::Value(v)) => {
                if let Some(n) = self.reads.get_mut(v) {
                    *n -= 1;
                }
            }
            (Op::Cas { .. } | Op::Incr(_), _) => self.others -= 1,
            _ => {}
        }
    }

    /// Whether an operation still to place could act on `state`
    /// differently from another state.
    fn would_see(&self, state: &Option<Bytes>) -> bool {
        self.others > 0 || self.reads.get(state).is_some_and(|&n| n > 0)
    }
}

/// A linearized operation, with what is needed to take it back.
struct Frame {
    op: usize,
    /// The register before it.
    before: Option<Bytes>,
    /// Whether it was tried among the unknown candidates, and then below
    /// which time they were candidates.
    unknown_below: Option<u64>,
}

/// The Wing and Gong search over one key's operations (see the module
/// documentation). Returns the steps taken and the result.
///
/// From a configuration, the candidates are the calls before the first
/// return in the known list, then the unknown calls invoked by that
/// return's time (their returns would be after everything, never
/// reached).
fn search(ops: &[&Event], options: Options) -> (u64, Search) {
    let mut entries = Entries::new(ops);
    let mut linearized = Linearized::new(ops);
    let groups = groups(ops);
    let twins = twins(&groups, ops.len());
    let mut observers = Observers::new(ops);
    let mut state: Option<Bytes> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut cache: Cache = HashMap::new();
    let mut cache_bytes = 0usize;
    let unknown = linearized.canonical(&groups, ops, entries.horizon(ops));
    remember(
        &mut cache,
        &linearized.known,
        &unknown,
        &state,
        &mut cache_bytes,
    );
    let mut remaining = ops.iter().filter(|e| e.completed.is_some()).count();
    let mut longest: Vec<usize> = Vec::new();
    let mut deepest = 0usize;
    let mut steps = 0u64;
    // Trying the known candidates (`None`), or the unknown ones invoked
    // up to this time.
    let mut unknown_below: Option<u64> = None;
    let mut entry = entries.nodes[KNOWN].next;
    while remaining > 0 {
        if steps >= options.max_steps {
            return (
                steps,
                Search::GaveUp {
                    exhausted: Budget::Steps,
                    deepest,
                },
            );
        }
        steps += 1;
        let node = entries.nodes[entry];
        let candidate = node.call
            && match unknown_below {
                None => true,
                Some(horizon) => ops[node.op].invoked <= horizon,
            };
        if candidate {
            let e = ops[node.op];
            let (answer, next) = apply(&state, &e.op);
            // Unknown operations not worth trying (see the module
            // documentation).
            let redundant = unknown_below.is_some_and(|horizon| {
                let blind = matches!(e.op, Op::Write(_) | Op::Delete);
                let after_unknown = stack.last().is_some_and(|f| f.unknown_below.is_some());
                blind && (after_unknown || !observers.would_see(&next))
                    || has_later_twin(&twins, ops, &linearized, node.op, horizon)
            });
            if !redundant && fits(&answer, &e.outcome) {
                linearized.flip(node.op);
                entries.lift(node.op);
                let unknown = linearized.canonical(&groups, ops, entries.horizon(ops));
                let fresh = remember(
                    &mut cache,
                    &linearized.known,
                    &unknown,
                    &next,
                    &mut cache_bytes,
                );
                if fresh {
                    if cache_bytes > options.max_cache_bytes {
                        return (
                            steps,
                            Search::GaveUp {
                                exhausted: Budget::Memory,
                                deepest,
                            },
                        );
                    }
                    stack.push(Frame {
                        op: node.op,
                        before: std::mem::replace(&mut state, next),
                        unknown_below,
                    });
                    deepest = deepest.max(stack.len());
                    if e.completed.is_some() {
                        remaining -= 1;
                    }
                    observers.take(e);
                    unknown_below = None;
                    entry = entries.nodes[KNOWN].next;
                    continue;
                }
                entries.unlift(node.op);
                linearized.flip(node.op);
            }
            entry = node.next;
        } else if unknown_below.is_none() {
            // The first return of the known list (never its tail while a
            // known operation is pending): the known candidates are
            // exhausted; now the unknown ones invoked by then.
            unknown_below = Some(
                ops.get(node.op)
                    .and_then(|e| e.completed)
                    .unwrap_or(u64::MAX),
            );
            entry = entries.nodes[UNKNOWN].next;
        } else {
            // All candidates are exhausted: backtrack.
            if stack.len() > longest.len() {
                longest = stack.iter().map(|f| f.op).collect();
            }
            let Some(frame) = stack.pop() else {
                return (steps, Search::Stuck(longest));
            };
            linearized.flip(frame.op);
            state = frame.before;
            entries.unlift(frame.op);
            if ops[frame.op].completed.is_some() {
                remaining += 1;
            }
            observers.put_back(ops[frame.op]);
            unknown_below = frame.unknown_below;
            entry = entries.nodes[entries.call_of[frame.op]].next;
        }
    }
    (
        steps,
        Search::Linearizable(stack.into_iter().map(|f| f.op).collect()),
    )
}

/// Approximate bytes a cached state takes.
fn state_bytes(s: &Option<Bytes>) -> usize {
    std::mem::size_of::<(Option<Bytes>, Vec<Box<[u64]>>)>() + s.as_ref().map_or(0, Bytes::len)
}

/// How many operations of a long prefix the explanation shows.
const SHOWN: usize = 10;

/// Builds the explanation of a key found not linearizable, from the
/// longest prefix the search found (indices into `ops`).
fn counterexample(
    key: &Bytes,
    ops: &[&Event],
    indices: &[usize],
    prefix: &[usize],
) -> Counterexample {
    let mut register = None;
    let mut placed = vec![false; ops.len()];
    for &op in prefix {
        register = apply(&register, &ops[op].op).1;
        placed[op] = true;
    }
    // Real time allows next what was invoked by the time the first
    // pending known operation completed.
    let horizon = (0..ops.len())
        .filter(|&i| !placed[i])
        .filter_map(|i| ops[i].completed)
        .min()
        .unwrap_or(u64::MAX);
    let (stuck, unknown): (Vec<usize>, Vec<usize>) = (0..ops.len())
        .filter(|&i| !placed[i] && ops[i].invoked <= horizon)
        .partition(|&i| ops[i].completed.is_some());

    let mut text = format!(
        "not linearizable: the longest linearizable prefix of key {} has {} of {} operations",
        show(key),
        prefix.len(),
        ops.len()
    );
    if prefix.is_empty() {
        text.push_str(".\n");
    } else {
        text.push_str(":\n");
        if prefix.len() > SHOWN {
            text.push_str(&format!("  ... ({} earlier)\n", prefix.len() - SHOWN));
        }
        for &op in &prefix[prefix.len().saturating_sub(SHOWN)..] {
            text.push_str(&format!("  {}\n", ops[op]));
        }
    }
    text.push_str(&format!(
        "after which the register holds {}, and none of these can be linearized next:\n",
        show_state(&register)
    ));
    for &op in &stuck {
        let e = ops[op];
        let (answer, _) = apply(&register, &e.op);
        if fits(&answer, &e.outcome) {
            text.push_str(&format!(
                "  {e}: fits here, but no linearization continues from it\n"
            ));
        } else {
            text.push_str(&format!("  {e}: here it would answer {answer}\n"));
        }
    }
    if !unknown.is_empty() {
        text.push_str(&format!(
            "(nor any of the {} operations of unknown outcome pending then)\n",
            unknown.len()
        ));
    }
    Counterexample {
        prefix: prefix.iter().map(|&i| indices[i]).collect(),
        register,
        stuck: stuck.iter().map(|&i| indices[i]).collect(),
        explanation: text,
    }
}

/// Adapts a history recorded against a real cluster: gets become reads,
/// puts writes and deletes deletes; the outcomes ok, value and not found
/// become [`Outcome::Ok`], [`Outcome::Value`]`(Some)` and
/// [`Outcome::Value`]`(None)`, and errors and timeouts
/// [`Outcome::Unknown`] (with no completion time). Final reads are
/// ordinary reads here. A mismatched outcome (a value answering a put) is
/// kept, for [`check`] to refuse; a put without a value is refused here.
pub fn from_real_history(
    records: &[crate::real_history::Record],
) -> Result<Vec<Event>, HistoryError> {
    use crate::real_history::{Op as RealOp, Outcome as RealOutcome};
    records
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let op = match (r.op, &r.value) {
                (RealOp::Get, _) => Op::Read,
                (RealOp::Put, Some(v)) => Op::Write(Bytes::from(v.clone())),
                (RealOp::Put, None) => return Err(HistoryError::PutWithoutValue { index }),
                (RealOp::Delete, _) => Op::Delete,
            };
            let outcome = match &r.outcome {
                RealOutcome::Ok => Outcome::Ok,
                RealOutcome::Value(v) => Outcome::Value(Some(Bytes::from(v.clone()))),
                RealOutcome::NotFound => Outcome::Value(None),
                RealOutcome::Error(_) | RealOutcome::Timeout => Outcome::Unknown,
            };
            let completed = (outcome != Outcome::Unknown).then_some(r.completed_us);
            Ok(Event {
                client: u64::from(r.client),
                key: Bytes::from(r.key.clone()),
                op,
                invoked: r.invoked_us,
                completed,
                outcome,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    fn ev(client: u64, key: &str, op: Op, t: (u64, u64), outcome: Outcome) -> Event {
        Event {
            client,
            key: b(key),
            op,
            invoked: t.0,
            completed: Some(t.1),
            outcome,
        }
    }

    fn unknown(client: u64, key: &str, op: Op, invoked: u64) -> Event {
        Event {
            client,
            key: b(key),
            op,
            invoked,
            completed: None,
            outcome: Outcome::Unknown,
        }
    }

    fn write(c: u64, v: &str, t: (u64, u64)) -> Event {
        ev(c, "k", Op::Write(b(v)), t, Outcome::Ok)
    }

    fn read(c: u64, v: Option<&str>, t: (u64, u64)) -> Event {
        ev(c, "k", Op::Read, t, Outcome::Value(v.map(b)))
    }

    fn report(h: &[Event]) -> Report {
        check(h, Options::default()).unwrap()
    }

    fn verdict(h: &[Event]) -> Verdict {
        let r = report(h);
        assert_eq!(r.keys.len(), 1, "one key expected");
        r.keys.into_values().next().unwrap().verdict
    }

    /// Asserts `order` is a linearization of the operations of `key` in
    /// `h`: every one of known outcome exactly once, real time respected,
    /// and the register replayed in that order answers what the clients
    /// saw.
    fn assert_replays(h: &[Event], key: &Bytes, order: &[usize]) {
        let mut seen = vec![false; h.len()];
        for &i in order {
            assert!(!seen[i], "{i} twice in {order:?}");
            assert_eq!(&h[i].key, key, "{} in the order of {key:?}", h[i]);
            seen[i] = true;
        }
        for (i, e) in h.iter().enumerate() {
            assert!(
                seen[i] || e.outcome == Outcome::Unknown || e.key != key,
                "{e} missing from {order:?}"
            );
        }
        for (p, &a) in order.iter().enumerate() {
            for &later in &order[p + 1..] {
                if let Some(c) = h[later].completed {
                    assert!(
                        c >= h[a].invoked,
                        "{} placed after {} but completed before it began",
                        h[later],
                        h[a]
                    );
                }
            }
        }
        let mut states: BTreeMap<&Bytes, Option<Bytes>> = BTreeMap::new();
        for &i in order {
            let state = states.entry(&h[i].key).or_default();
            let (answer, next) = apply(state, &h[i].op);
            assert!(fits(&answer, &h[i].outcome), "{} but {answer}", h[i]);
            *state = next;
        }
    }

    fn assert_linearizable(h: &[Event]) {
        let r = report(h);
        assert!(r.is_linearizable(), "{r}");
        assert!(r.violations().is_empty());
        for (key, k) in &r.keys {
            let Verdict::Linearizable { order } = &k.verdict else {
                panic!("{r}");
            };
            assert_replays(h, key, order);
        }
    }

    fn assert_not_linearizable(h: &[Event]) -> Counterexample {
        match verdict(h) {
            Verdict::NotLinearizable(c) => c,
            v => panic!("expected not linearizable, got {v:?}"),
        }
    }

    #[test]
    fn sequential_histories_pass_with_a_witness_that_replays() {
        let cas = |e: Option<&str>, n: &str| Op::Cas {
            expected: e.map(b),
            new: b(n),
        };
        let h = vec![
            read(1, None, (0, 5)),
            ev(2, "k", cas(None, "a"), (10, 15), Outcome::Cas(true)),
            ev(1, "k", cas(None, "x"), (20, 25), Outcome::Cas(false)),
            read(3, Some("a"), (30, 35)),
            ev(2, "k", Op::Incr(2), (40, 45), Outcome::NotAnInteger),
            write(1, "5", (50, 55)),
            ev(2, "k", Op::Incr(2), (60, 65), Outcome::Counter(7)),
            ev(3, "k", cas(Some("7"), "b"), (70, 75), Outcome::Cas(true)),
            read(1, Some("b"), (80, 85)),
            ev(2, "k", Op::Delete, (90, 95), Outcome::Ok),
            ev(3, "k", Op::Incr(-4), (100, 105), Outcome::Counter(-4)),
            read(1, Some("-4"), (110, 115)),
        ];
        assert_linearizable(&h);
        let Verdict::Linearizable { order } = verdict(&h) else {
            panic!()
        };
        assert_eq!(order, (0..h.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_stale_read_fails() {
        let h = vec![
            write(1, "v1", (0, 10)),
            write(1, "v2", (20, 30)),
            read(2, Some("v1"), (40, 50)),
        ];
        let c = assert_not_linearizable(&h);
        assert_eq!(c.prefix, vec![0, 1]);
        assert_eq!(c.register, Some(b("v2")));
        assert_eq!(c.stuck, vec![2]);
    }

    #[test]
    fn the_counterexample_names_the_stuck_operation() {
        let h = vec![
            write(1, "v1", (0, 10)),
            write(1, "v2", (20, 30)),
            read(3, Some("v1"), (120, 180)),
        ];
        let c = assert_not_linearizable(&h);
        assert!(
            c.explanation.contains(
                "[client 3: read \"k\" @120..180 -> \"v1\"]: here it would answer \"v2\""
            ),
            "{c}"
        );
        assert!(
            c.explanation
                .contains("[client 1: write \"k\" \"v2\" @20..30 -> ok]"),
            "{c}"
        );
        let text = report(&h).to_string();
        assert!(text.starts_with("key \"k\": not linearizable"), "{text}");
    }

    #[test]
    fn a_read_of_a_value_never_written_fails() {
        let h = vec![write(1, "v1", (0, 10)), read(2, Some("v9"), (5, 50))];
        let c = assert_not_linearizable(&h);
        assert_eq!(c.stuck, vec![1]);
    }

    #[test]
    fn a_new_old_inversion_fails() {
        let h = vec![
            write(1, "v1", (0, 10)),
            write(1, "v2", (20, 100)),
            read(2, Some("v2"), (30, 40)),
            read(3, Some("v1"), (50, 60)),
        ];
        assert_not_linearizable(&h);
        // Either order of the two reads alone is fine.
        assert_linearizable(&h[..3]);
        assert_linearizable(&[h[0].clone(), h[1].clone(), h[3].clone()]);
    }

    #[test]
    fn a_cas_that_swapped_on_a_mismatch_fails() {
        let cas = Op::Cas {
            expected: Some(b("b")),
            new: b("c"),
        };
        let h = vec![
            write(1, "a", (0, 10)),
            ev(2, "k", cas.clone(), (20, 30), Outcome::Cas(true)),
        ];
        assert_not_linearizable(&h);
        let h = vec![
            write(1, "a", (0, 10)),
            ev(2, "k", cas, (20, 30), Outcome::Cas(false)),
            read(1, Some("a"), (40, 50)),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn two_creates_cannot_both_swap() {
        let create = |v: &str| Op::Cas {
            expected: None,
            new: b(v),
        };
        let mut h = vec![
            ev(1, "k", create("x"), (0, 10), Outcome::Cas(true)),
            ev(2, "k", create("y"), (5, 15), Outcome::Cas(true)),
        ];
        assert_not_linearizable(&h);
        h[1].outcome = Outcome::Cas(false);
        assert_linearizable(&h);
        h.push(read(3, Some("y"), (20, 30)));
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_lost_increment_fails() {
        let mut h = vec![
            ev(1, "k", Op::Incr(1), (0, 10), Outcome::Counter(1)),
            ev(2, "k", Op::Incr(1), (5, 15), Outcome::Counter(1)),
        ];
        assert_not_linearizable(&h);
        h[0].outcome = Outcome::Counter(2);
        assert_linearizable(&h);
        // An increment of a value that is no integer changes nothing.
        let h = vec![
            write(1, "x", (0, 10)),
            ev(2, "k", Op::Incr(1), (20, 30), Outcome::NotAnInteger),
            read(1, Some("x"), (40, 50)),
        ];
        assert_linearizable(&h);
        let mut h = h;
        h[1].outcome = Outcome::Counter(1);
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_deleted_value_read_back_fails() {
        let h = vec![
            write(1, "v1", (0, 10)),
            ev(1, "k", Op::Delete, (20, 30), Outcome::Ok),
            read(2, Some("v1"), (40, 50)),
        ];
        assert_not_linearizable(&h);
        let mut h = h;
        h[2].outcome = Outcome::Value(None);
        assert_linearizable(&h);
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_value() {
        for seen in ["v1", "v2"] {
            let h = vec![
                write(1, "v1", (0, 10)),
                write(1, "v2", (20, 50)),
                read(2, Some(seen), (30, 40)),
            ];
            assert_linearizable(&h);
        }
        // Touching intervals are concurrent.
        let h = vec![write(1, "v1", (0, 10)), read(2, None, (10, 20))];
        assert_linearizable(&h);
        let h = vec![write(1, "v1", (0, 10)), read(2, None, (11, 20))];
        assert_not_linearizable(&h);
    }

    #[test]
    fn an_unknown_write_may_be_observed_later() {
        let h = vec![
            write(1, "v1", (0, 10)),
            unknown(1, "k", Op::Write(b("v2")), 20),
            read(2, Some("v1"), (100, 110)),
            read(2, Some("v2"), (200, 210)),
            read(3, Some("v2"), (300, 310)),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn an_unknown_write_may_never_be_observed() {
        let h = vec![
            write(1, "v1", (0, 10)),
            unknown(1, "k", Op::Write(b("v2")), 20),
            read(2, Some("v1"), (100, 110)),
            read(3, Some("v1"), (300, 310)),
        ];
        assert_linearizable(&h);
        let Verdict::Linearizable { order } = verdict(&h) else {
            panic!()
        };
        assert!(!order.contains(&1), "{order:?}");
        // Nor can it have taken effect before it was invoked.
        let h = vec![
            read(2, Some("v2"), (0, 10)),
            unknown(1, "k", Op::Write(b("v2")), 20),
        ];
        assert_not_linearizable(&h);
    }

    #[test]
    fn an_unknown_write_cannot_be_unobserved() {
        let h = vec![
            write(1, "v1", (0, 10)),
            unknown(1, "k", Op::Write(b("v2")), 20),
            read(2, Some("v2"), (100, 110)),
            read(3, Some("v1"), (200, 210)),
        ];
        assert_not_linearizable(&h);
    }

    #[test]
    fn a_configuration_is_pruned_only_by_one_that_can_do_as_much() {
        // The unknown write and the unknown increment both make "0" from
        // absent, but only starting with the increment leaves the write
        // for the last read: reaching "0" with the write spent must not
        // stand for reaching it with the increment spent.
        let cas = |e: &str, n: &str| Op::Cas {
            expected: Some(b(e)),
            new: b(n),
        };
        let h = vec![
            unknown(0, "k", Op::Write(b("0")), 2),
            unknown(1, "k", Op::Incr(0), 4),
            unknown(0, "k", cas("0", "2"), 9),
            ev(0, "k", cas("2", "4"), (17, 18), Outcome::Cas(true)),
            read(0, Some("0"), (22, 24)),
        ];
        assert_linearizable(&h);
        let Verdict::Linearizable { order } = verdict(&h) else {
            panic!()
        };
        assert_eq!(order, vec![1, 2, 3, 0, 4]);
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = vec![
            ev(1, "a", Op::Write(b("1")), (0, 10), Outcome::Ok),
            ev(2, "b", Op::Write(b("1")), (0, 10), Outcome::Ok),
            ev(1, "a", Op::Read, (20, 30), Outcome::Value(Some(b("1")))),
            // Stale: "b" holds 1 from time 10.
            ev(2, "b", Op::Read, (20, 30), Outcome::Value(None)),
            // Absent on "c" although "a" and "b" hold 1.
            ev(3, "c", Op::Read, (20, 30), Outcome::Value(None)),
        ];
        let r = report(&h);
        assert!(!r.is_linearizable());
        let v = r.violations();
        assert_eq!(v.len(), 1, "{r}");
        assert_eq!(v[0].0, &b("b"));
        assert_eq!(v[0].1.stuck, vec![3]);
        assert!(matches!(
            r.keys[&b("a")].verdict,
            Verdict::Linearizable { .. }
        ));
        assert!(matches!(
            r.keys[&b("c")].verdict,
            Verdict::Linearizable { .. }
        ));
        assert_eq!(r.keys[&b("a")].operations, 2);
    }

    #[test]
    fn a_pathological_history_gives_up_within_its_budget() {
        // 40 concurrent writes, then a read of a value none wrote: the
        // search must try the writes' orders before concluding.
        let mut h: Vec<Event> = (0..40)
            .map(|i| write(i, &format!("v{i}"), (0, 100)))
            .collect();
        h.push(read(99, Some("nobody"), (200, 300)));
        let options = Options {
            max_steps: 10_000,
            ..Options::default()
        };
        let r = check(&h, options).unwrap();
        let k = &r.keys[&b("k")];
        assert!(
            matches!(
                k.verdict,
                Verdict::GaveUp {
                    exhausted: Budget::Steps,
                    ..
                }
            ),
            "{r}"
        );
        assert_eq!(k.steps, 10_000);
        assert!(!r.is_linearizable());
        assert_eq!(r.gave_up(), vec![&b("k")]);
        assert!(r.violations().is_empty());

        let options = Options {
            max_cache_bytes: 4096,
            ..Options::default()
        };
        let r = check(&h, options).unwrap();
        assert!(matches!(
            r.keys[&b("k")].verdict,
            Verdict::GaveUp {
                exhausted: Budget::Memory,
                ..
            }
        ));

        // With few enough writes the cache makes it quick to refute.
        let mut h: Vec<Event> = (0..12)
            .map(|i| write(i, &format!("v{i}"), (0, 100)))
            .collect();
        h.push(read(99, Some("nobody"), (200, 300)));
        assert_not_linearizable(&h);
    }

    #[test]
    fn malformed_histories_are_refused() {
        let cases = [
            (
                write(1, "v", (10, 5)),
                HistoryError::CompletedBeforeInvoked {
                    index: 1,
                    invoked: 10,
                    completed: 5,
                },
            ),
            (
                ev(1, "k", Op::Read, (0, 5), Outcome::Cas(true)),
                HistoryError::OutcomeMismatch {
                    index: 1,
                    event: "[client 1: read \"k\" @0..5 -> swapped]".into(),
                },
            ),
            (
                ev(1, "k", Op::Write(b("v")), (0, 5), Outcome::Value(None)),
                HistoryError::OutcomeMismatch {
                    index: 1,
                    event: "[client 1: write \"k\" \"v\" @0..5 -> absent]".into(),
                },
            ),
            (
                ev(1, "k", Op::Incr(1), (0, 5), Outcome::Ok),
                HistoryError::OutcomeMismatch {
                    index: 1,
                    event: "[client 1: incr \"k\" by 1 @0..5 -> ok]".into(),
                },
            ),
            (
                ev(1, "k", Op::Read, (0, 5), Outcome::Unknown),
                HistoryError::UnknownWithCompletion {
                    index: 1,
                    event: "[client 1: read \"k\" @0..5 -> unknown]".into(),
                },
            ),
            (
                Event {
                    completed: None,
                    ..write(1, "v", (0, 5))
                },
                HistoryError::KnownWithoutCompletion {
                    index: 1,
                    event: "[client 1: write \"k\" \"v\" @0..? -> ok]".into(),
                },
            ),
        ];
        for (bad, want) in cases {
            let h = vec![write(0, "x", (0, 1)), bad];
            assert_eq!(check(&h, Options::default()), Err(want));
        }
    }

    /// The operations of a random history.
    #[derive(Clone, Copy, Debug)]
    enum Mix {
        /// Reads, writes, deletes, compare-and-swaps and increments.
        All,
        /// Reads, writes and deletes.
        ReadWrite,
    }

    /// A random history of a linearizable system: one atomic register per
    /// key, each operation taking effect at a point inside an interval
    /// drawn around it. A fraction of the operations get an unknown
    /// outcome, and took effect or not.
    fn random_history(
        rng: &mut ChaCha8Rng,
        n: usize,
        clients: usize,
        keys: &[&str],
        spread: u64,
        p_unknown: f64,
        mix: Mix,
    ) -> Vec<Event> {
        let mut registers: BTreeMap<&str, Option<Bytes>> = BTreeMap::new();
        let mut written: Vec<Bytes> = Vec::new();
        let mut free = vec![0u64; clients];
        let mut t = 0u64;
        let mut h = Vec::with_capacity(n);
        for fresh in 0..n {
            let c = rng.random_range(0..clients);
            // The point where it takes effect: after the client's previous
            // operation and after every earlier point.
            t = t.max(free[c]) + rng.random_range(1..=4);
            let invoked = rng.random_range((free[c] + 1).max(t.saturating_sub(spread))..=t);
            let completed = t + rng.random_range(0..=spread);
            let key = keys[rng.random_range(0..keys.len())];
            let state = registers.entry(key).or_default();
            let value = if rng.random_bool(0.5) {
                Bytes::from(format!("v{fresh}"))
            } else {
                Bytes::from(fresh.to_string())
            };
            let kinds = match mix {
                Mix::All => 100,
                Mix::ReadWrite => 68,
            };
            let op = match rng.random_range(0..kinds) {
                0..35 => Op::Read,
                35..60 => Op::Write(value),
                60..68 => Op::Delete,
                68..85 => {
                    let expected = if rng.random_bool(0.5) || written.is_empty() {
                        state.clone()
                    } else if rng.random_bool(0.2) {
                        None
                    } else {
                        Some(written[rng.random_range(0..written.len())].clone())
                    };
                    Op::Cas {
                        expected,
                        new: value,
                    }
                }
                _ => Op::Incr(rng.random_range(-3..=3)),
            };
            if let Op::Write(v) | Op::Cas { new: v, .. } = &op {
                written.push(v.clone());
            }
            let (answer, next) = apply(state, &op);
            if rng.random_bool(p_unknown) {
                if rng.random_bool(0.5) {
                    *state = next;
                }
                h.push(unknown(c as u64, key, op, invoked));
                free[c] = completed;
            } else {
                *state = next;
                h.push(ev(c as u64, key, op, (invoked, completed), answer));
                free[c] = completed;
            }
        }
        h
    }

    #[test]
    fn random_linearizable_histories_pass_and_phantom_reads_fail() {
        let mut corrupted = 0;
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut h = random_history(&mut rng, 50, 4, &["a", "b"], 12, 0.1, Mix::All);
            assert_linearizable(&h);
            let reads: Vec<usize> = (0..h.len())
                .filter(|&i| h[i].op == Op::Read && h[i].completed.is_some())
                .collect();
            if reads.is_empty() {
                continue;
            }
            let i = reads[rng.random_range(0..reads.len())];
            h[i].outcome = Outcome::Value(Some(b("phantom")));
            let r = report(&h);
            let v = r.violations();
            assert_eq!(v.len(), 1, "seed {seed}: {r}");
            assert_eq!(v[0].0, &h[i].key, "seed {seed}: {r}");
            corrupted += 1;
        }
        assert!(corrupted >= 190, "{corrupted}");
    }

    #[test]
    fn long_histories_are_checked_iteratively_within_the_budget() {
        // Every kind of operation, 1% of unknown outcomes.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let h = random_history(&mut rng, 4000, 4, &["k"], 20, 0.01, Mix::All);
        assert_linearizable(&h);
        assert_eq!(report(&h).keys[&b("k")].operations, 4000);

        // The real cluster's reads, writes and deletes, 2% of unknown
        // outcomes; then a value nobody wrote, read at the very end, which
        // only an exhaustive search can refute.
        let mut h = random_history(&mut rng, 4000, 4, &["k"], 10, 0.02, Mix::ReadWrite);
        assert_linearizable(&h);
        let last = h.iter().filter_map(|e| e.completed).max().unwrap_or(0);
        h.push(read(9, Some("phantom"), (last + 10, last + 20)));
        let r = report(&h);
        let k = &r.keys[&b("k")];
        let Verdict::NotLinearizable(c) = &k.verdict else {
            panic!("{r}");
        };
        assert_eq!(c.stuck, vec![h.len() - 1]);
        assert_eq!(
            c.prefix.len(),
            h.len() - 1 - unknowns_left_out(&h, &c.prefix)
        );
        assert!(k.steps < Options::default().max_steps / 2, "{}", k.steps);
    }

    /// The unknown operations not in `prefix`.
    fn unknowns_left_out(h: &[Event], prefix: &[usize]) -> usize {
        (0..h.len())
            .filter(|i| h[*i].completed.is_none() && !prefix.contains(i))
            .count()
    }

    /// The reference: tries every subset of the unknown operations and
    /// every order of the chosen operations that respects real time.
    fn brute_force(h: &[Event]) -> bool {
        fn extend(
            h: &[Event],
            chosen: &[usize],
            placed: &mut [bool],
            state: &Option<Bytes>,
        ) -> bool {
            if chosen.iter().all(|&i| placed[i]) {
                return true;
            }
            for &i in chosen {
                if placed[i] {
                    continue;
                }
                let must_wait = chosen.iter().any(|&j| {
                    !placed[j] && j != i && matches!(h[j].completed, Some(c) if c < h[i].invoked)
                });
                if must_wait {
                    continue;
                }
                let (answer, next) = apply(state, &h[i].op);
                if !fits(&answer, &h[i].outcome) {
                    continue;
                }
                placed[i] = true;
                if extend(h, chosen, placed, &next) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        let unknown: Vec<usize> = (0..h.len()).filter(|&i| h[i].completed.is_none()).collect();
        (0u32..1 << unknown.len()).any(|mask| {
            let chosen: Vec<usize> = (0..h.len())
                .filter(|&i| match unknown.iter().position(|&u| u == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .collect();
            extend(h, &chosen, &mut vec![false; h.len()], &None)
        })
    }

    /// Changes one known outcome to another the operation could give.
    fn corrupt(rng: &mut ChaCha8Rng, h: &mut [Event]) -> bool {
        let mut values: Vec<Option<Bytes>> = vec![None, Some(b("phantom"))];
        for e in h.iter() {
            if let Op::Write(v) | Op::Cas { new: v, .. } = &e.op {
                values.push(Some(v.clone()));
            }
        }
        let targets: Vec<usize> = (0..h.len())
            .filter(|&i| !matches!(h[i].outcome, Outcome::Ok | Outcome::Unknown))
            .collect();
        if targets.is_empty() {
            return false;
        }
        let i = targets[rng.random_range(0..targets.len())];
        let new = match &h[i].outcome {
            Outcome::Value(v) => {
                let others: Vec<&Option<Bytes>> = values.iter().filter(|o| *o != v).collect();
                Outcome::Value(others[rng.random_range(0..others.len())].clone())
            }
            Outcome::Cas(s) => Outcome::Cas(!s),
            Outcome::Counter(n) if rng.random_bool(0.8) => {
                Outcome::Counter(n + if rng.random_bool(0.5) { 1 } else { -1 })
            }
            Outcome::Counter(_) => Outcome::NotAnInteger,
            Outcome::NotAnInteger => Outcome::Counter(1),
            Outcome::Ok | Outcome::Unknown => return false,
        };
        h[i].outcome = new;
        true
    }

    /// Maps every value to one of three, so that operations repeat
    /// (identical writes, compare-and-swaps that may now swap): the
    /// history may stop being linearizable, which is fine for a
    /// comparison.
    fn collapse_values(h: &mut [Event]) {
        let collapse = |v: &mut Bytes| {
            let sum: usize = v.iter().map(|&c| usize::from(c)).sum();
            *v = b(["1", "2", "x"][sum % 3]);
        };
        for e in h {
            match &mut e.op {
                Op::Write(v) => collapse(v),
                Op::Cas { expected, new } => {
                    collapse(new);
                    if let Some(v) = expected {
                        collapse(v);
                    }
                }
                Op::Read | Op::Delete | Op::Incr(_) => {}
            }
            if let Outcome::Value(Some(v)) = &mut e.outcome {
                collapse(v);
            }
        }
    }

    /// The checker's mutation test: random small histories, linearizable
    /// or corrupted, judged by the checker and by brute force.
    #[test]
    fn wing_gong_agrees_with_brute_force_on_small_histories() {
        let (mut pass, mut fail, mut corrupted) = (0, 0, 0);
        for seed in 0..1000 {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let n = rng.random_range(1..=8);
            let spread = [3, 10, 30][rng.random_range(0..3)];
            let p_unknown = [0.1, 0.25, 0.5][rng.random_range(0..3)];
            let mix = if rng.random_bool(0.5) {
                Mix::All
            } else {
                Mix::ReadWrite
            };
            let mut h = random_history(&mut rng, n, 4, &["k"], spread, p_unknown, mix);
            assert!(brute_force(&h), "seed {seed}: generated history refuted");
            if rng.random_bool(0.25) {
                collapse_values(&mut h);
            }
            if rng.random_bool(0.6) && corrupt(&mut rng, &mut h) {
                corrupted += 1;
            }
            let reference = brute_force(&h);
            let v = verdict(&h);
            match &v {
                Verdict::Linearizable { order } => assert_replays(&h, &b("k"), order),
                Verdict::NotLinearizable(c) => assert!(!c.stuck.is_empty()),
                Verdict::GaveUp { .. } => panic!("seed {seed}: gave up"),
            }
            let found = matches!(v, Verdict::Linearizable { .. });
            assert_eq!(
                found, reference,
                "seed {seed}: checker says {found}, brute force {reference}: {h:#?}"
            );
            if reference {
                pass += 1;
            } else {
                fail += 1;
            }
        }
        // Both answers come up often, so the agreement means something.
        assert!(corrupted > 400, "{corrupted}");
        assert!(pass > 250 && fail > 250, "{pass} pass, {fail} fail");
    }

    #[test]
    fn real_history_records_are_adapted() {
        use crate::real_history::{Op as R, Outcome as O, Record};
        let rec = |op: R, value: Option<&str>, t: (u64, u64), outcome: O| Record {
            client: 4,
            node: "n1".into(),
            op,
            key: "k".into(),
            value: value.map(str::to_owned),
            invoked_us: t.0,
            completed_us: t.1,
            outcome,
            final_read: false,
        };
        let records = vec![
            rec(R::Get, None, (0, 5), O::NotFound),
            rec(R::Put, Some("a"), (10, 20), O::Ok),
            rec(R::Get, None, (30, 40), O::Value("a".into())),
            rec(R::Put, Some("b"), (50, 60), O::Timeout),
            rec(R::Delete, None, (70, 80), O::Error("unavailable".into())),
            rec(R::Get, None, (90, 95), O::Value("b".into())),
        ];
        let h = from_real_history(&records).unwrap();
        assert_eq!(
            h[0],
            Event {
                client: 4,
                key: b("k"),
                op: Op::Read,
                invoked: 0,
                completed: Some(5),
                outcome: Outcome::Value(None),
            }
        );
        assert_eq!(h[1].op, Op::Write(b("a")));
        assert_eq!(h[1].outcome, Outcome::Ok);
        assert_eq!(h[2].outcome, Outcome::Value(Some(b("a"))));
        assert_eq!((h[3].completed, &h[3].outcome), (None, &Outcome::Unknown));
        assert_eq!(h[4].op, Op::Delete);
        assert_eq!((h[4].completed, &h[4].outcome), (None, &Outcome::Unknown));
        assert_linearizable(&h);

        // A stale read after the timed-out put surfaced.
        let mut stale = records.clone();
        stale.push(rec(R::Get, None, (100, 110), O::Value("a".into())));
        assert_not_linearizable(&from_real_history(&stale).unwrap());

        let mut bad = records.clone();
        bad[1].value = None;
        assert_eq!(
            from_real_history(&bad),
            Err(HistoryError::PutWithoutValue { index: 1 })
        );
        let mut bad = records;
        bad[2].outcome = O::Ok;
        let h = from_real_history(&bad).unwrap();
        assert!(matches!(
            check(&h, Options::default()),
            Err(HistoryError::OutcomeMismatch { index: 2, .. })
        ));
    }
}
