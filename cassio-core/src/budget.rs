//! One byte budget for background work: anti-entropy pushes and hint
//! delivery draw from the same token bucket, so together they never send
//! more than `bytes_per_sec` and foreground latency stays bounded.

use crate::time::Instant;
use std::time::Duration;

/// A token bucket of bytes, refilled at a fixed rate up to one second's worth.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    rate: u64,
    available: f64,
    at: Instant,
}

impl ByteBudget {
    /// A full bucket refilled at `bytes_per_sec` (0: unlimited).
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        ByteBudget {
            rate: bytes_per_sec,
            available: bytes_per_sec as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.available = (self.available + dt * self.rate as f64).min(self.rate as f64);
    }

    /// True when background work may send now. A send may overdraw the
    /// bucket (one batch is never split); the debt delays the next one.
    pub fn ready(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        self.available > 0.0
    }

    /// Charges `bytes` sent (or received) by background work.
    pub fn charge(&mut self, now: Instant, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.available -= bytes as f64;
    }

    /// When the bucket will next allow a send.
    pub fn ready_at(&self) -> Instant {
        if self.rate == 0 || self.available > 0.0 {
            return self.at;
        }
        let secs = (-self.available + 1.0) / self.rate as f64;
        self.at + Duration::from_secs_f64(secs.min(3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_delays_the_next_send_by_its_size() {
        let t0 = Instant::ZERO;
        let mut b = ByteBudget::new(1000, t0);
        assert!(b.ready(t0));
        b.charge(t0, 3000);
        assert!(!b.ready(t0));
        assert!(!b.ready(t0 + Duration::from_millis(1900)));
        assert!(b.ready(t0 + Duration::from_millis(2100)));
        let mut u = ByteBudget::new(0, t0);
        u.charge(t0, u64::MAX);
        assert!(u.ready(t0));
    }
}
