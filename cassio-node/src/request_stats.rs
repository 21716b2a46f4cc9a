//! Live request rate and p99 latency per operation, for `/status` (and the
//! web console that polls it).
//!
//! The driver already times every answered request for the
//! `cassio_request_duration_seconds` histogram, but that histogram lives in
//! the process-wide Prometheus recorder: it is shared by every node of a
//! process (tests, `local-cluster`) and cannot answer "how many in the last
//! few seconds". So the driver also feeds this small window: one slot per
//! second for the last [`WINDOW_SECS`] seconds, each with a count, an error
//! count and an [`hdrhistogram`] of latencies in microseconds (2 significant
//! digits, up to an hour; longer ones are clamped to it). Memory is fixed
//! whatever the load (the slots are allocated once and reset on reuse: about
//! 26 KiB each, under 1 MiB a node), and a p99 read from the merged slots is
//! within 1% of the exact one.

use crate::handle::OpStats;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Seconds of history the rates and the p99 cover (complete seconds only,
/// so a rate never dips because the current second has only just begun).
pub const WINDOW_SECS: u64 = 10;

/// The operations reported, in the order `/status` lists them (the names
/// the driver's metrics use).
pub(crate) const OPS: [&str; 3] = ["get", "set", "del"];

/// The largest latency told apart, in microseconds (an hour); longer ones
/// are recorded as this.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits the latency histograms keep: values are
/// within 1% of the ones recorded.
const SIGNIFICANT_DIGITS: u8 = 2;

/// An empty latency histogram, in microseconds.
fn latency_histogram() -> Histogram<u64> {
    // Cannot fail: the bounds are constants, valid (1 <= low, 2 * low <=
    // high, digits <= 5), and every unit test builds some.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant, valid histogram bounds")
}

/// One second of one operation.
struct Slot {
    /// Which second since the window's origin this slot holds (a slot whose
    /// second is too old is stale and is cleared before reuse).
    second: u64,
    count: u64,
    errors: u64,
    /// Latencies of the answered requests, in microseconds.
    latencies: Histogram<u64>,
}

impl Slot {
    fn empty() -> Self {
        Slot {
            second: u64::MAX,
            count: 0,
            errors: 0,
            latencies: latency_histogram(),
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
            slots: (0..=WINDOW_SECS).map(|_| Slot::empty()).collect(),
        }
    }

    fn slot(&mut self, second: u64) -> &mut Slot {
        let len = self.slots.len();
        // Cannot be out of range: the index is taken modulo the length.
        let s = &mut self.slots[(second % len as u64) as usize];
        if s.second != second {
            // Reuse the stale slot's histogram rather than allocate anew.
            s.second = second;
            s.count = 0;
            s.errors = 0;
            s.latencies.reset();
        }
        s
    }
}

/// A latency in whole microseconds (saturating; the histogram clamps it to
/// its range anyway).
fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
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
            s.latencies.saturating_record(micros(latency));
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
                let mut merged = latency_histogram();
                for s in w
                    .slots
                    .iter()
                    .filter(|s| s.second >= first && s.second < current)
                {
                    count += s.count;
                    errors += s.errors;
                    // Cannot fail: every slot has the merged histogram's
                    // bounds, so its values fit.
                    let _ = merged.add(&s.latencies);
                }
                OpStats {
                    op: (*op).to_string(),
                    rate: count as f64 / span as f64,
                    error_rate: errors as f64 / span as f64,
                    p99_micros: (!merged.is_empty()).then(|| merged.value_at_quantile(0.99)),
                    window_secs: span,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The p99 of a window holding a single answered request.
    fn p99_of_one(latency: Duration) -> Option<u64> {
        let t0 = Instant::now();
        let mut s = RequestStats::new(t0);
        s.record("get", t0, latency, true);
        s.snapshot(t0 + Duration::from_secs(1))[0].p99_micros
    }

    #[test]
    fn a_p99_is_within_one_percent_of_the_latency() {
        for micros in [1u64, 3, 10, 999, 1000, 1001, 250_000, 3_000_000] {
            let p = p99_of_one(Duration::from_micros(micros)).unwrap_or(0);
            assert!(p >= micros, "{micros} µs read as {p}");
            assert!(p as f64 <= micros as f64 * 1.01, "{micros} µs read as {p}");
        }
        // Below a microsecond counts as 0 or 1; past an hour, as an hour.
        let p = p99_of_one(Duration::from_nanos(300));
        assert!(matches!(p, Some(0 | 1)), "{p:?}");
        let p = p99_of_one(Duration::from_secs(100_000)).unwrap_or(0);
        assert!(p >= MAX_LATENCY_MICROS, "{p}");
        assert!(p as f64 <= MAX_LATENCY_MICROS as f64 * 1.01, "{p}");
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
        assert!((200_000..=202_000).contains(&p), "p99 {p} µs");
        // A young node divides by the seconds it has: 1000 in 2 s.
        assert!((snap[1].rate - 500.0).abs() < 1e-9, "{:?}", snap[1]);

        // With only 0.5% slow, the p99 is a fast request's latency.
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
        assert!((1000..=1010).contains(&p), "p99 {p} µs");
    }

    #[test]
    fn a_reused_slot_forgets_its_old_second() {
        let t0 = Instant::now();
        let mut s = RequestStats::new(t0);
        // Second 0: slow deletes, all failed.
        for _ in 0..50 {
            s.record("del", t0, 500 * MS, false);
        }
        // Second WINDOW_SECS + 1 lands in the same slot: fast, all fine.
        let again = t0 + Duration::from_secs(WINDOW_SECS + 1);
        for _ in 0..30 {
            s.record("del", again, MS, true);
        }
        let del = &s.snapshot(again + Duration::from_secs(1))[2];
        assert_eq!(del.op, "del");
        assert!((del.rate - 3.0).abs() < 1e-9, "{del:?}");
        assert_eq!(del.error_rate, 0.0, "{del:?}");
        let p = del.p99_micros.unwrap_or(0);
        assert!((1000..=1010).contains(&p), "p99 {p} µs");
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
