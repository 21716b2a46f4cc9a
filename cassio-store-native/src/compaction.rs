//! Merging sorted sources (for range scans and compaction) and choosing what
//! to compact (size-tiered, as in Cassandra's STCS, restricted to runs of
//! adjacent tables so that a newer table always shadows an older one).

use bytes::Bytes;
use cassio_core::{StoreError, Versioned};
use std::ops::Range;

/// A sorted stream of entries.
pub(crate) type Source<'a> = Box<dyn Iterator<Item = Result<(Bytes, Versioned), StoreError>> + 'a>;

/// Merges sorted sources into one sorted stream with one entry per key: the
/// last-write-wins winner among the sources that hold it.
pub(crate) struct Merge<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<(Bytes, Versioned)>>,
    /// An error met while advancing past the entry just returned; reported
    /// on the next call.
    pending: Option<StoreError>,
    failed: bool,
}

impl<'a> Merge<'a> {
    /// Primes every source.
    pub(crate) fn new(mut sources: Vec<Source<'a>>) -> Result<Self, StoreError> {
        let heads = sources
            .iter_mut()
            .map(|s| s.next().transpose())
            .collect::<Result<_, _>>()?;
        Ok(Merge {
            sources,
            heads,
            pending: None,
            failed: false,
        })
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<(Bytes, Versioned), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(e) = self.pending.take() {
            self.failed = true;
            return Some(Err(e));
        }
        // Few sources (memtables + a bounded number of tables): a linear
        // scan for the minimum beats a heap's bookkeeping.
        let mut min: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some((k, _)) = h {
                if min.is_none_or(|m| self.heads[m].as_ref().is_some_and(|(mk, _)| k < mk)) {
                    min = Some(i);
                }
            }
        }
        let m = min?;
        let key = self.heads[m].as_ref()?.0.clone();
        let mut best: Option<Versioned> = None;
        for i in 0..self.heads.len() {
            if self.heads[i].as_ref().is_some_and(|(k, _)| *k == key) {
                let (_, v) = self.heads[i].take()?;
                if best.as_ref().is_none_or(|b| v.supersedes(b)) {
                    best = Some(v);
                }
                match self.sources[i].next().transpose() {
                    Ok(h) => self.heads[i] = h,
                    Err(e) => {
                        self.pending.get_or_insert(e);
                    }
                }
            }
        }
        best.map(|b| Ok((key, b)))
    }
}

/// Size-tiered choice among tables listed newest first with sizes `sizes`:
/// the first run of at least `min_run` adjacent tables whose sizes are within
/// [0.5, 1.5] of the run's mean (at most `max_run` of them); failing that,
/// when there are more than `max_tables` tables, the newest ones (the
/// smallest, usually) so that reads never consult more than `max_tables`.
pub(crate) fn pick(
    sizes: &[u64],
    min_run: usize,
    max_run: usize,
    max_tables: usize,
) -> Option<Range<usize>> {
    let min_run = min_run.max(2);
    let max_run = max_run.max(min_run);
    let n = sizes.len();
    for start in 0..n {
        let mut sum = sizes[start] as f64;
        let mut end = start + 1;
        while end < n && end - start < max_run {
            let mean = sum / (end - start) as f64;
            let s = sizes[end] as f64;
            if s < mean * 0.5 || s > mean * 1.5 {
                break;
            }
            sum += s;
            end += 1;
        }
        if end - start >= min_run {
            return Some(start..end);
        }
    }
    if n > max_tables.max(2) {
        return Some(0..(n - max_tables.max(2) + 1).max(2));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::{NodeId, Timestamp};

    fn src(items: &[(&'static str, u64)]) -> Source<'static> {
        let v: Vec<_> = items
            .iter()
            .map(|(k, t)| {
                Ok((
                    Bytes::from_static(k.as_bytes()),
                    Versioned::value(Timestamp::new(*t, 0, NodeId(0)), Bytes::from(t.to_string())),
                ))
            })
            .collect();
        Box::new(v.into_iter())
    }

    #[test]
    fn merge_keeps_one_winner_per_key_in_order() {
        let m = Merge::new(vec![
            src(&[("a", 1), ("c", 5)]),
            src(&[("a", 3), ("b", 2), ("c", 4)]),
            src(&[]),
        ])
        .unwrap();
        let out: Vec<_> = m
            .map(|r| r.map(|(k, v)| (k, v.ts.micros)).unwrap())
            .collect();
        assert_eq!(
            out,
            vec![
                (Bytes::from_static(b"a"), 3),
                (Bytes::from_static(b"b"), 2),
                (Bytes::from_static(b"c"), 5)
            ]
        );
    }

    #[test]
    fn merge_stops_at_the_first_error() {
        let bad: Source<'static> = Box::new(
            vec![
                Ok((
                    Bytes::from_static(b"a"),
                    Versioned::tombstone(Timestamp::ZERO),
                )),
                Err(StoreError::Closed),
            ]
            .into_iter(),
        );
        let out: Vec<_> = Merge::new(vec![bad, src(&[("b", 1)])]).unwrap().collect();
        assert!(out[0].is_ok());
        assert!(out[1].is_err());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn picks_similar_sized_adjacent_runs() {
        assert_eq!(pick(&[10, 10, 10], 4, 32, 16), None);
        assert_eq!(pick(&[10, 11, 9, 10, 400], 4, 32, 16), Some(0..4));
        assert_eq!(pick(&[1, 100, 100, 100, 100, 5000], 4, 32, 16), Some(1..5));
        assert_eq!(pick(&[10, 10, 10, 10, 10, 10], 4, 4, 16), Some(0..4));
        // Too many tables of unrelated sizes: merge the newest.
        let sizes: Vec<u64> = (0..20).map(|i| 1u64 << i).collect();
        assert_eq!(pick(&sizes, 4, 32, 16), Some(0..5));
    }
}
