//! One key of a chain-replicated (CRAQ) keyspace as a replica holds it:
//! the committed version and any newer dirty ones (used by
//! [`crate::chain`]).
//!
//! The head gives each write of a key the next version (`u64`, from 1);
//! writes flow down the chain in order, so a replica receives a key's
//! versions in sequence: an older one is a duplicate (re-forwarded after
//! a reconfiguration) and ignored, a gap means a lost forward and is
//! refused, so the predecessor sends again. The tail commits; commits flow
//! back, and a commit of version `v` makes every version up to `v` clean.
//! A replica answers a read of a clean key from its committed version; a
//! dirty key needs the tail's committed version ([`ChainRecord::value_at`]).

use crate::types::Value;
use serde::{Deserialize, Serialize};

/// A version of a key in a chain-replicated keyspace (0: never written).
pub type ChainVersion = u64;

/// Dirty versions a key may hold at once; the head refuses further writes
/// of the key (the client sees overload) until some commit. Bounds what a
/// record can grow to.
pub const MAX_DIRTY: usize = 256;

/// The largest encoded record [`ChainRecord::decode`] accepts (more is
/// corruption): `MAX_DIRTY` values of the largest size plus headers.
const MAX_ENCODED: usize = 64 * 1024 * 1024;

/// Why a chain record refused an operation or could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A version arrived before the ones between it and the newest held:
    /// the predecessor must send those first.
    #[error("version {got} arrived but {expected} was expected next")]
    Gap {
        /// The version expected next.
        expected: ChainVersion,
        /// The version that arrived.
        got: ChainVersion,
    },
    /// The key already holds [`MAX_DIRTY`] uncommitted versions.
    #[error("key has {MAX_DIRTY} uncommitted versions")]
    TooManyDirty,
    /// A commit named a version this replica does not hold.
    #[error("commit of version {got}, but the newest held is {newest}")]
    CommitAhead {
        /// The version committed.
        got: ChainVersion,
        /// The newest version held.
        newest: ChainVersion,
    },
    /// The tail's committed version is older than what this replica
    /// already knows committed: the answer is stale (an old tail).
    #[error("the tail answered version {got}, older than the committed {committed}")]
    StaleAnswer {
        /// The version the tail answered.
        got: ChainVersion,
        /// The version committed here.
        committed: ChainVersion,
    },
    /// The stored bytes are not a chain record.
    #[error("corrupt chain record: {0}")]
    Corrupt(String),
}

/// What a replica can answer to a read of the key on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainRead<'a> {
    /// No uncommitted version: the committed value (`None`: absent).
    Clean(Option<&'a Value>),
    /// Uncommitted versions exist: ask the tail which version is
    /// committed, then answer [`ChainRecord::value_at`] it.
    Dirty,
}

/// Whether [`ChainRecord::apply`] took the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The version is new here: store the record, forward the write.
    New,
    /// Held already (a re-forward): nothing changes; forward it anyway,
    /// the successor may lack it too.
    Duplicate,
}

/// A key's versions at one replica: committed and dirty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRecord {
    /// The newest committed version and its value (`None`: deleted or
    /// never written).
    committed: (ChainVersion, Option<Value>),
    /// Newer versions not yet committed, ascending and consecutive from
    /// `committed.0 + 1`.
    dirty: Vec<(ChainVersion, Option<Value>)>,
    /// The chain epoch in which the oldest dirty version arrived: a member
    /// that rejoined at a later epoch drops such versions (they may never
    /// have been committed, and the chain may have reused their numbers).
    #[serde(default)]
    dirty_epoch: u64,
}

impl ChainRecord {
    /// The newest version held, dirty included, and its value: what the
    /// head builds on (the next version, compare-and-set, increments).
    pub fn newest(&self) -> (ChainVersion, Option<&Value>) {
        match self.dirty.last() {
            Some((v, value)) => (*v, value.as_ref()),
            None => (self.committed.0, self.committed.1.as_ref()),
        }
    }

    /// The newest committed version and its value.
    pub fn committed(&self) -> (ChainVersion, Option<&Value>) {
        (self.committed.0, self.committed.1.as_ref())
    }

    /// The version the head gives the key's next write.
    pub fn next_version(&self) -> ChainVersion {
        self.newest().0 + 1
    }

    /// Whether every version held is committed.
    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Takes version `version` of the key (`None`: a delete), dirty.
    pub fn apply(
        &mut self,
        version: ChainVersion,
        value: Option<Value>,
    ) -> Result<Applied, ChainError> {
        let expected = self.next_version();
        if version < expected {
            return Ok(Applied::Duplicate);
        }
        if version > expected {
            return Err(ChainError::Gap {
                expected,
                got: version,
            });
        }
        if self.dirty.len() >= MAX_DIRTY {
            return Err(ChainError::TooManyDirty);
        }
        self.dirty.push((version, value));
        Ok(Applied::New)
    }

    /// [`ChainRecord::apply`], noting `epoch` as the one the dirty
    /// versions arrived in when none were dirty before.
    pub fn apply_at(
        &mut self,
        epoch: u64,
        version: ChainVersion,
        value: Option<Value>,
    ) -> Result<Applied, ChainError> {
        let was_clean = self.dirty.is_empty();
        let applied = self.apply(version, value)?;
        if was_clean && !self.dirty.is_empty() {
            self.dirty_epoch = epoch;
        }
        Ok(applied)
    }

    /// The epoch the oldest dirty version arrived in (0 when clean).
    pub fn dirty_epoch(&self) -> u64 {
        if self.dirty.is_empty() {
            0
        } else {
            self.dirty_epoch
        }
    }

    /// The dirty versions, oldest first.
    pub fn dirty(&self) -> &[(ChainVersion, Option<Value>)] {
        &self.dirty
    }

    /// Forgets every dirty version (a member that rejoined: what it held
    /// dirty before may never have committed). Returns whether any was.
    pub fn strip_dirty(&mut self) -> bool {
        let had = !self.dirty.is_empty();
        self.dirty.clear();
        had
    }

    /// Commits every version held (a member that became the chain's last:
    /// each passed through it towards the old last member). Returns
    /// whether anything was dirty.
    pub fn commit_all(&mut self) -> bool {
        let newest = self.newest().0;
        let had = !self.dirty.is_empty();
        // Cannot fail: `newest` is held.
        let _ = self.commit(newest);
        had
    }

    /// Takes `version`, known committed, as the committed version if it is
    /// newer (a syncing member's pull, a predecessor's catch-up): dirty
    /// versions it covers are dropped, newer ones kept. Returns whether
    /// anything changed.
    pub fn install_committed(&mut self, version: ChainVersion, value: Option<Value>) -> bool {
        if version <= self.committed.0 {
            return false;
        }
        self.committed = (version, value);
        self.dirty.retain(|(v, _)| *v > version);
        if self.dirty.first().is_some_and(|(v, _)| *v != version + 1) {
            // Not consecutive after the new committed version: the newer
            // ones cannot be trusted to continue it.
            self.dirty.clear();
        }
        true
    }

    /// Brings this record up to a predecessor's `other`: its committed
    /// version if newer, then its dirty versions past ours. Returns
    /// whether anything changed.
    pub fn catch_up(&mut self, epoch: u64, other: &ChainRecord) -> bool {
        let (cv, cval) = other.committed();
        let mut changed = self.install_committed(cv, cval.cloned());
        for (v, value) in &other.dirty {
            if matches!(self.apply_at(epoch, *v, value.clone()), Ok(Applied::New)) {
                changed = true;
            }
        }
        changed
    }

    /// The tail committed `version`: it and every older version are clean.
    /// A commit older than the committed one changes nothing (commits may
    /// arrive out of order after a reconfiguration).
    pub fn commit(&mut self, version: ChainVersion) -> Result<(), ChainError> {
        let newest = self.newest().0;
        if version > newest {
            return Err(ChainError::CommitAhead {
                got: version,
                newest,
            });
        }
        if version <= self.committed.0 {
            return Ok(());
        }
        let cut = self.dirty.partition_point(|(v, _)| *v <= version);
        let mut done = self.dirty.drain(..cut);
        if let Some(last) = done.next_back() {
            self.committed = last;
        }
        Ok(())
    }

    /// What this replica can answer alone.
    pub fn read(&self) -> ChainRead<'_> {
        if self.dirty.is_empty() {
            ChainRead::Clean(self.committed.1.as_ref())
        } else {
            ChainRead::Dirty
        }
    }

    /// The value of `version`, which the tail answered is committed, for a
    /// read of a dirty key. A version newer than any held cannot come from
    /// the current tail (everything it committed passed through here),
    /// and one older than the committed version here is a stale answer:
    /// both are refused.
    pub fn value_at(&self, version: ChainVersion) -> Result<Option<&Value>, ChainError> {
        if version == self.committed.0 {
            return Ok(self.committed.1.as_ref());
        }
        if version < self.committed.0 {
            return Err(ChainError::StaleAnswer {
                got: version,
                committed: self.committed.0,
            });
        }
        self.dirty
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, value)| value.as_ref())
            .ok_or(ChainError::CommitAhead {
                got: version,
                newest: self.newest().0,
            })
    }

    /// The record as stored.
    pub fn encode(&self) -> Result<Vec<u8>, ChainError> {
        postcard::to_allocvec(self).map_err(|e| ChainError::Corrupt(e.to_string()))
    }

    /// A stored record, checked: versions ascending and consecutive after
    /// the committed one, at most [`MAX_DIRTY`] of them.
    pub fn decode(bytes: &[u8]) -> Result<Self, ChainError> {
        if bytes.len() > MAX_ENCODED {
            return Err(ChainError::Corrupt(format!("{} bytes", bytes.len())));
        }
        let (record, rest): (ChainRecord, _) =
            postcard::take_from_bytes(bytes).map_err(|e| ChainError::Corrupt(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ChainError::Corrupt(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if record.dirty.len() > MAX_DIRTY {
            return Err(ChainError::Corrupt(format!(
                "{} dirty versions",
                record.dirty.len()
            )));
        }
        let mut want = record.committed.0;
        for (v, _) in &record.dirty {
            want = want
                .checked_add(1)
                .ok_or_else(|| ChainError::Corrupt("version overflow".into()))?;
            if *v != want {
                return Err(ChainError::Corrupt(format!(
                    "dirty version {v} where {want} was expected"
                )));
            }
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn val(s: &str) -> Option<Value> {
        Some(Value::from(s.to_owned()))
    }

    #[test]
    fn versions_apply_in_sequence_duplicates_pass_and_gaps_are_refused() {
        let mut r = ChainRecord::default();
        assert_eq!(r.next_version(), 1);
        assert_eq!(r.read(), ChainRead::Clean(None));
        assert_eq!(r.apply(1, val("a")), Ok(Applied::New));
        assert_eq!(r.apply(2, val("b")), Ok(Applied::New));
        assert_eq!(r.apply(1, val("a")), Ok(Applied::Duplicate));
        assert_eq!(
            r.apply(4, val("d")),
            Err(ChainError::Gap {
                expected: 3,
                got: 4
            })
        );
        assert_eq!(r.newest(), (2, val("b").as_ref()));
        assert_eq!(r.committed(), (0, None));
        assert_eq!(r.read(), ChainRead::Dirty);
    }

    #[test]
    fn a_commit_cleans_every_version_up_to_it() {
        let mut r = ChainRecord::default();
        for (v, s) in [(1, "a"), (2, "b"), (3, "c")] {
            r.apply(v, val(s)).unwrap();
        }
        r.commit(2).unwrap();
        assert_eq!(r.committed(), (2, val("b").as_ref()));
        assert_eq!(r.read(), ChainRead::Dirty);
        // An older commit arriving late changes nothing.
        r.commit(1).unwrap();
        assert_eq!(r.committed().0, 2);
        assert_eq!(
            r.commit(4),
            Err(ChainError::CommitAhead { got: 4, newest: 3 })
        );
        r.commit(3).unwrap();
        assert!(r.is_clean());
        assert_eq!(r.read(), ChainRead::Clean(val("c").as_ref()));
        // A delete is a version too.
        r.apply(4, None).unwrap();
        r.commit(4).unwrap();
        assert_eq!(r.read(), ChainRead::Clean(None));
        assert_eq!(r.next_version(), 5);
    }

    #[test]
    fn a_dirty_read_answers_the_version_the_tail_committed() {
        let mut r = ChainRecord::default();
        for (v, s) in [(1, "a"), (2, "b"), (3, "c")] {
            r.apply(v, val(s)).unwrap();
        }
        r.commit(1).unwrap();
        assert_eq!(r.value_at(1), Ok(val("a").as_ref()));
        assert_eq!(r.value_at(2), Ok(val("b").as_ref()));
        assert_eq!(
            r.value_at(5),
            Err(ChainError::CommitAhead { got: 5, newest: 3 })
        );
        r.commit(2).unwrap();
        assert_eq!(
            r.value_at(1),
            Err(ChainError::StaleAnswer {
                got: 1,
                committed: 2
            })
        );
    }

    #[test]
    fn uncommitted_versions_are_bounded() {
        let mut r = ChainRecord::default();
        for v in 1..=MAX_DIRTY as u64 {
            r.apply(v, val("x")).unwrap();
        }
        assert_eq!(
            r.apply(MAX_DIRTY as u64 + 1, val("x")),
            Err(ChainError::TooManyDirty)
        );
        r.commit(1).unwrap();
        assert_eq!(r.apply(MAX_DIRTY as u64 + 1, val("x")), Ok(Applied::New));
    }

    #[test]
    fn records_round_trip_and_corrupt_bytes_are_refused() {
        let mut r = ChainRecord::default();
        r.apply(1, val("a")).unwrap();
        r.apply(2, None).unwrap();
        r.commit(1).unwrap();
        let bytes = r.encode().unwrap();
        assert_eq!(ChainRecord::decode(&bytes), Ok(r.clone()));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            ChainRecord::decode(&trailing),
            Err(ChainError::Corrupt(_))
        ));
        // Versions out of sequence are corruption, not a record.
        let bad = ChainRecord {
            committed: (1, val("a")),
            dirty: vec![(3, val("c"))],
            dirty_epoch: 0,
        };
        assert!(matches!(
            ChainRecord::decode(&bad.encode().unwrap()),
            Err(ChainError::Corrupt(_))
        ));
        // Any bytes: an error or a checked record, never a panic.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..2000 {
            let n = rng.random_range(0..40);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if let Ok(rec) = ChainRecord::decode(&junk) {
                assert!(rec.dirty.len() <= MAX_DIRTY);
            }
        }
    }

    /// A chain of three replicas driven by random steps (forward one
    /// version, commit at the tail, pass a commit back, lose and
    /// re-forward): every replica's record stays in sequence, a replica
    /// never commits what the tail did not, and once everything is
    /// delivered all three hold the same clean record.
    #[test]
    fn a_chain_of_records_converges_under_random_delivery() {
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut chain = [
                ChainRecord::default(),
                ChainRecord::default(),
                ChainRecord::default(),
            ];
            let writes = rng.random_range(1..40u64);
            let mut written = 0;
            for _ in 0..2000 {
                match rng.random_range(0..4) {
                    0 if written < writes && chain[0].dirty.len() < MAX_DIRTY => {
                        written += 1;
                        let v = chain[0].next_version();
                        let value = if rng.random_bool(0.2) {
                            None
                        } else {
                            val(&format!("w{v}"))
                        };
                        assert_eq!(chain[0].apply(v, value), Ok(Applied::New));
                    }
                    1 => {
                        // Forward the version the successor lacks, or
                        // re-forward the one before it (a duplicate).
                        let i = rng.random_range(0..2);
                        let next = chain[i + 1].next_version();
                        if rng.random_bool(0.2) && next > 1 {
                            assert_eq!(chain[i + 1].apply(next - 1, None), Ok(Applied::Duplicate));
                        } else if next <= chain[i].newest().0 {
                            let value = chain[i].value_at(next).unwrap().cloned();
                            assert_eq!(chain[i + 1].apply(next, value), Ok(Applied::New));
                        }
                    }
                    2 => {
                        let v = chain[2].newest().0;
                        chain[2].commit(v).unwrap();
                    }
                    _ => {
                        let i = rng.random_range(0..2);
                        let c = chain[i + 1].committed.0;
                        chain[i].commit(c).unwrap();
                    }
                }
                for r in &chain {
                    assert!(r.committed.0 <= chain[2].committed.0, "seed {seed}");
                    assert_eq!(ChainRecord::decode(&r.encode().unwrap()).as_ref(), Ok(r));
                }
            }
            // Deliver everything: forward in order, commit, pass back.
            for i in 0..2 {
                while chain[i + 1].newest().0 < chain[i].newest().0 {
                    let v = chain[i + 1].next_version();
                    let value = chain[i].value_at(v).unwrap().cloned();
                    assert_eq!(chain[i + 1].apply(v, value), Ok(Applied::New));
                }
            }
            let tail = chain[2].newest().0;
            chain[2].commit(tail).unwrap();
            chain[1].commit(tail).unwrap();
            chain[0].commit(tail).unwrap();
            assert_eq!(chain[0].newest().0, written, "seed {seed}");
            assert!(chain.iter().all(ChainRecord::is_clean));
            assert_eq!(chain[0], chain[1], "seed {seed}");
            assert_eq!(chain[1], chain[2], "seed {seed}");
        }
    }
}
