//! Live request rate and p99 latency per operation, for `/status` (and the
//! web console that polls it).
//!
//! The driver already times every answered request for the
//! `cassio_request_duration_seconds` histogram, but that histogram lives in
//! the process-wide Prometheus recorder: it is shared by every node of a
//! process (tests, `local-cluster`) and cannot answer "how many in the last
//! few seconds". So the driver also feeds this small window: one slot per
//! second for the last [`WINDOW_SECS`] seconds, each with a count, an error
//! count and a latency histogram in quarter-octave buckets. Memory is fixed
//! (a few KiB per operation) whatever the load, and a p99 read from the
//! buckets is within 19% of the exact one, which is plenty for a dashboard.

use crate::handle::OpStats;
use std::time::{Duration, Instant};

/// Seconds of history the rates and the p99 cover (complete seconds only,
/// so a rate never dips because the current second has only just begun).
pub const WINDOW_SECS: u64 = 10;

/// The operations reported, in the order `/status` lists them (the names
/// the driver's metrics use).
pub(crate) const OPS: [&str; 3] = ["get", "set", "del"];

/// Quarter-octave latency buckets: bucket `i` holds latencies below
/// `2^((i + 1) / 4)` microseconds; 128 of them reach past an hour.
const BUCKETS: usize = 128;

/// One second of one operation.
#[derive(Clone)]
struct Slot {
    /// Which second since the window's origin this slot holds (a slot whose
    /// second is too old is stale and is cleared before reuse).
    second: u64,
    count: u64,
    errors: u64,
    latencies: [u32; BUCKETS],
}

impl Slot {
    fn empty() -> Self {
        Slot {
            second: u64::MAX,
            count: 0,
            errors: 0,
            latencies: [0; BUCKETS],
        }
    }
}

/// The window of one operation: the current second and the
/// [`WINDOW_SECS`] before it.
struct OpWindow {
    slots: Vec<Slot>,
}

impl OpWindow {
    fn new() -> Self {
        OpWindow {
            slots: vec![Slot::empty(); WINDOW_SECS as usize + 1],
        }
    }

    fn slot(&mut self, second: u64) -> &mut Slot {
        let len = self.slots.len();
        // Cannot be out of range: the index is taken modulo the length.
        let s = &mut self.slots[(second % len as u64) as usize];
        if s.second != second {
            *s = Slot::empty();
            s.second = second;
        }
        s
    }
}

/// The bucket a latency falls in.
fn bucket(latency: Duration) -> usize {
    let micros = latency.as_secs_f64() * 1e6;
    if micros < 1.0 {
        return 0;
    }
    // Saturating float-to-int cast: NaN and huge values cannot occur here
    // (a Duration is finite and positive), and the clamp bounds the rest.
    ((micros.log2() * 4.0).floor() as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in microseconds.
fn upper_micros(i: usize) -> u64 {
    2f64.powf((i as f64 + 1.0) / 4.0).ceil() as u64
}

/// Rates and latencies of the last [`WINDOW_SECS`] seconds, per operation.
pub(crate) struct RequestStats {
    origin: Instant,
    ops: Vec<OpWindow>,
}

impl RequestStats {
    /// An empty window starting now.
    pub(crate) fn new(origin: Instant) -> Self {
        RequestStats {
            origin,
            ops: OPS.iter().map(|_| OpWindow::new()).collect(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_secs()
    }

    fn window(&mut self, op: &str) -> Option<&mut OpWindow> {
        let i = OPS.iter().position(|&o| o == op)?;
        self.ops.get_mut(i)
    }

    /// A request of `op` answered at `at` after `latency`; `ok` unless it
    /// failed.
    pub(crate) fn record(&mut self, op: &str, at: Instant, latency: Duration, ok: bool) {
        let second = self.second(at);
        if let Some(w) = self.window(op) {
            let s = w.slot(second);
            s.count += 1;
            s.errors += u64::from(!ok);
            let b = &mut s.latencies[bucket(latency)];
            *b = b.saturating_add(1);
        }
    }

    /// A request of `op` refused at `at` before it reached the coordinator
    /// (overloaded, shutting down, bad request): an error with no latency
    /// worth including in the p99.
    pub(crate) fn refused(&mut self, op: &str, at: Instant) {
        let second = self.second(at);
        if let Some(w) = self.window(op) {
            let s = w.slot(second);
            s.count += 1;
            s.errors += 1;
        }
    }

    /// Every operation's figures over the complete seconds before `now`.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<OpStats> {
        let current = self.second(now);
        let first = current.saturating_sub(WINDOW_SECS);
        // A node up for less than the window divides by what it has seen.
        let span = (current - first).max(1);
        OPS.iter()
            .zip(&self.ops)
            .map(|(op, w)| {
                let mut count = 0;
                let mut errors = 0;
                let mut hist = [0u64; BUCKETS];
                for s in w
                    .slots
                    .iter()
                    .filter(|s| s.second >= first && s.second < current)
                {
                    count += s.count;
                    errors += s.errors;
                    for (h, &n) in hist.iter_mut().zip(&s.latencies) {
                        *h += u64::from(n);
                    }
                }
                OpStats {
                    op: (*op).to_string(),
                    rate: count as f64 / span as f64,
                    error_rate: errors as f64 / span as f64,
                    p99_micros: p99(&hist),
                    window_secs: span,
                }
            })
            .collect()
    }
}

/// The 99th percentile of a bucket histogram (the upper bound of its
/// bucket), or `None` without samples.
fn p99(hist: &[u64; BUCKETS]) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    // The smallest latency at or above which at most 1% of samples lie.
    let rank = total - total / 100;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(upper_micros(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn buckets_bound_their_latencies_within_a_fifth() {
        for micros in [1u64, 3, 10, 999, 1000, 1001, 250_000, 3_000_000] {
            let d = Duration::from_micros(micros);
            let up = upper_micros(bucket(d));
            assert!(up >= micros, "{micros} µs in a bucket ending at {up}");
            assert!(
                (up as f64) <= micros as f64 * 1.19 + 1.0,
                "{micros} µs -> {up}"
            );
        }
        assert_eq!(bucket(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    #[test]
    fn rates_count_only_complete_seconds_of_the_window() {
        let t0 = Instant::now();
        let mut s = RequestStats::new(t0);
        // 20 gets per second for 12 seconds, 3 of them failed in each.
        for sec in 0..12u64 {
            for i in 0..20 {
                let at = t0 + Duration::from_secs(sec) + Duration::from_millis(i * 10);
                s.record("get", at, MS, i >= 3);
            }
        }
        // The current (13th) second has requests too, not yet counted.
        s.record("get", t0 + Duration::from_millis(12_500), MS, true);
        s.refused("set", t0 + Duration::from_millis(11_500));
        let snap = s.snapshot(t0 + Duration::from_millis(12_600));
        assert_eq!(snap.len(), 3);
        let get = &snap[0];
        assert_eq!(get.op, "get");
        assert_eq!(get.window_secs, WINDOW_SECS);
        assert!((get.rate - 20.0).abs() < 1e-9, "{get:?}");
        assert!((get.error_rate - 3.0).abs() < 1e-9, "{get:?}");
        let set = &snap[1];
        assert!((set.rate - 0.1).abs() < 1e-9, "{set:?}");
        assert_eq!(set.p99_micros, None, "a refusal has no latency");
        assert_eq!(snap[2].rate, 0.0);
        // Long after, the window is empty again.
        let later = s.snapshot(t0 + Duration::from_secs(60));
        assert_eq!(later[0].rate, 0.0);
        assert_eq!(later[0].p99_micros, None);
    }

    #[test]
    fn p99_is_the_slow_tail_not_the_typical_request() {
        let t0 = Instant::now();
        let mut s = RequestStats::new(t0);
        let at = t0 + Duration::from_millis(100);
        for _ in 0..985 {
            s.record("set", at, MS, true);
        }
        for _ in 0..15 {
            s.record("set", at, 200 * MS, true);
        }
        let snap = s.snapshot(t0 + Duration::from_secs(2));
        let p = snap[1].p99_micros.unwrap_or(0);
        assert!((200_000..=240_000).contains(&p), "p99 {p} µs");
        // A young node divides by the seconds it has: 1000 in 2 s.
        assert!((snap[1].rate - 500.0).abs() < 1e-9, "{:?}", snap[1]);

        // With only 0.5% slow, the p99 is the fast requests' bucket.
        let mut s = RequestStats::new(t0);
        for _ in 0..995 {
            s.record("set", at, MS, true);
        }
        for _ in 0..5 {
            s.record("set", at, 200 * MS, true);
        }
        let p = s.snapshot(t0 + Duration::from_secs(2))[1]
            .p99_micros
            .unwrap_or(0);
        assert!((1000..=1200).contains(&p), "p99 {p} µs");
    }

    #[test]
    fn an_unknown_operation_is_ignored() {
        let t0 = Instant::now();
        let mut s = RequestStats::new(t0);
        s.record("scan", t0, MS, true);
        s.refused("scan", t0);
        let snap = s.snapshot(t0 + Duration::from_secs(5));
        assert!(snap.iter().all(|o| o.rate == 0.0));
    }
}
