//! The clock bound: this node's hybrid logical clock, kept within the
//! maximum clock offset of the cluster's time.
//!
//! The cluster's time is estimated as the median of this node's wall clock
//! and its live peers' (their offsets come with gossip), so one node whose
//! clock is off, this one or another, cannot move it. A timestamp further
//! ahead of it than the maximum offset is refused rather than observed (it
//! would drag this node's clock, and every write it stamps, into the
//! future), and this node refuses to stamp writes while its own wall clock
//! is off the median by more than the bound.
//!
//! [`NodeStamper`] is that clock as the coordinator and the replica see it
//! ([`Stamper`]), read at the host's latest wall-clock reading.

use crate::membership::Membership;
use crate::time::Instant;
use crate::types::{HybridClock, Timestamp};

/// How long a computed median offset is reused: offsets change with
/// gossip, about once a second, so computing it on every request is waste.
const MEDIAN_TTL_MILLIS: u128 = 100;

/// Where this node's wall clock stands against the cluster's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetCheck {
    /// Our wall clock minus the cluster's median, in micros.
    pub offset_micros: i64,
    /// Whether that is beyond the maximum offset.
    pub off: bool,
    /// Whether `off` changed since the previous check (worth an event).
    pub changed: bool,
}

/// This node's clock and what it knows of the cluster's.
#[derive(Debug)]
pub(crate) struct ClockGuard {
    clock: HybridClock,
    /// The maximum clock offset, in micros.
    max_offset: u64,
    /// The median peer clock offset, and when it was computed.
    median: (Instant, i64),
    /// Whether the clock was last found off the cluster's (for events).
    off: bool,
}

impl ClockGuard {
    /// A guard of `clock` that tolerates `max_offset` micros of offset.
    pub fn new(clock: HybridClock, max_offset: u64) -> Self {
        ClockGuard {
            clock,
            max_offset,
            median: (Instant::ZERO, 0),
            off: false,
        }
    }

    /// The maximum clock offset, in micros.
    pub fn max_offset(&self) -> u64 {
        self.max_offset
    }

    /// The clock's newest physical time, in micros.
    pub fn micros(&self) -> u64 {
        self.clock.micros()
    }

    /// The median of the live peers' clock offsets (`peers`, asked only
    /// when the cached median is older than 100 ms) and ours (0).
    pub fn median_offset(&mut self, now: Instant, peers: impl FnOnce() -> Vec<i64>) -> i64 {
        let (at, median) = self.median;
        if at != Instant::ZERO && now.saturating_duration_since(at).as_millis() < MEDIAN_TTL_MILLIS
        {
            return median;
        }
        let mut offsets = peers();
        offsets.push(0);
        offsets.sort_unstable();
        let median = offsets[offsets.len() / 2];
        self.median = (now.max(Instant::from_micros(1)), median);
        median
    }

    /// The cluster's time as this node estimates it, given our `wall` clock.
    pub fn reference_wall(
        &mut self,
        now: Instant,
        wall: u64,
        peers: impl FnOnce() -> Vec<i64>,
    ) -> u64 {
        wall.saturating_add_signed(self.median_offset(now, peers))
    }

    /// This node's wall clock minus the cluster's median (0 until peers
    /// have reported readings).
    pub fn own_offset(&mut self, now: Instant, peers: impl FnOnce() -> Vec<i64>) -> i64 {
        self.median_offset(now, peers).saturating_neg()
    }

    /// Whether this node's clock is too far off the cluster's to stamp
    /// writes, and whether that changed since the last check.
    pub fn check_own_offset(
        &mut self,
        now: Instant,
        peers: impl FnOnce() -> Vec<i64>,
    ) -> OffsetCheck {
        let offset_micros = self.own_offset(now, peers);
        let off = offset_micros.unsigned_abs() > self.max_offset;
        let changed = off != self.off;
        self.off = off;
        OffsetCheck {
            offset_micros,
            off,
            changed,
        }
    }

    /// Moves the clock past `ts` if it is within the maximum offset of the
    /// cluster's time (or of our clock, if that is ahead); returns how far
    /// beyond the bound it was otherwise, leaving the clock alone.
    pub fn observe_bounded(
        &mut self,
        now: Instant,
        wall: u64,
        ts: Timestamp,
        peers: impl FnOnce() -> Vec<i64>,
    ) -> Result<(), u64> {
        let limit = self
            .reference_wall(now, wall, peers)
            .max(self.clock.micros())
            .saturating_add(self.max_offset);
        if ts.micros > limit {
            return Err(ts.micros - limit);
        }
        self.clock.observe(ts, wall);
        Ok(())
    }

    /// A new timestamp, above every one issued or observed, at wall time
    /// `wall`.
    pub fn stamp(&mut self, wall: u64) -> Timestamp {
        self.clock.now(wall)
    }
}

/// What the coordinator and the replica need of the clock: stamps for the
/// writes this node coordinates, and the bound on versions it learns of.
pub(crate) trait Stamper {
    /// A new timestamp for a write, at monotonic time `now`.
    fn stamp(&mut self, now: Instant) -> Timestamp;
    /// Moves the clock past `ts` unless it is beyond the clock bound
    /// (then: how far beyond, in micros).
    fn observe(&mut self, now: Instant, ts: Timestamp) -> Result<(), u64>;
    /// The maximum clock offset, in micros.
    fn max_offset(&self) -> u64;
    /// This node's HLC time at monotonic time `now`, in micros, without
    /// issuing a timestamp: what expiries are judged against.
    fn hlc_micros(&self, now: Instant) -> u64;
}

/// The wall clock at monotonic time `now`, given the host's latest reading
/// `wall` (taken at `wall.0`).
pub(crate) fn wall_at(wall: (Instant, u64), now: Instant) -> u64 {
    wall.1
        .saturating_add(now.as_micros().saturating_sub(wall.0.as_micros()))
}

/// The clock as the coordinator sees it: this node's guarded clock, read at
/// the host's latest wall-clock reading.
pub(crate) struct NodeStamper<'a> {
    /// This node's guarded clock.
    pub clock: &'a mut ClockGuard,
    /// Where the live peers' clock offsets come from.
    pub membership: &'a Membership,
    /// The host's latest wall-clock reading, and when it was taken.
    pub wall: (Instant, u64),
    /// The node's random number generator (random stamps).
    #[cfg(feature = "mutations")]
    pub rng: &'a mut rand_chacha::ChaCha8Rng,
    /// This node, which random stamps are issued by.
    #[cfg(feature = "mutations")]
    pub id: crate::types::NodeId,
    /// Whether to stamp writes at random (mutation).
    #[cfg(feature = "mutations")]
    pub random_timestamps: bool,
    /// Whether reads ignore expiries (mutation).
    #[cfg(feature = "mutations")]
    pub ignore_expiry: bool,
}

impl Stamper for NodeStamper<'_> {
    fn stamp(&mut self, now: Instant) -> Timestamp {
        let wall = wall_at(self.wall, now);
        #[cfg(feature = "mutations")]
        if self.random_timestamps {
            use rand::Rng;
            // Anywhere from 2 s behind to just inside the offset bound ahead,
            // so replicas accept them: wrong, but not refused.
            let ahead = self.clock.max_offset().saturating_sub(100_000);
            let micros =
                wall.saturating_sub(2_000_000) + self.rng.random_range(0..2_000_000 + ahead);
            let logical = self.rng.random_range(0..4);
            return Timestamp::new(micros, logical, self.id);
        }
        self.clock.stamp(wall)
    }

    fn observe(&mut self, now: Instant, ts: Timestamp) -> Result<(), u64> {
        let wall = wall_at(self.wall, now);
        let membership = self.membership;
        self.clock
            .observe_bounded(now, wall, ts, || membership.live_clock_offsets())
    }

    fn max_offset(&self) -> u64 {
        self.clock.max_offset()
    }

    fn hlc_micros(&self, now: Instant) -> u64 {
        // (Mutation: judged at the epoch, nothing has expired yet.)
        #[cfg(feature = "mutations")]
        if self.ignore_expiry {
            return 0;
        }
        self.clock.micros().max(wall_at(self.wall, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    #[test]
    fn wall_at_adds_the_monotonic_time_since_the_reading() {
        let at = Instant::from_micros(1_000);
        assert_eq!(wall_at((at, WALL), Instant::from_micros(1_250)), WALL + 250);
        // A monotonic time before the reading does not move the wall back.
        assert_eq!(wall_at((at, WALL), Instant::from_micros(10)), WALL);
    }

    const MAX: u64 = 500_000;
    const WALL: u64 = 1_000_000_000_000;

    fn guard() -> ClockGuard {
        ClockGuard::new(HybridClock::new(NodeId(1)), MAX)
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(1 + ms * 1000)
    }

    #[test]
    fn a_timestamp_beyond_the_bound_of_the_median_is_refused() {
        let mut g = guard();
        // Peers agree with us: the median is our wall clock.
        let peers = || vec![0, 10, -10];
        let far = Timestamp::new(WALL + MAX + 1_000, 0, NodeId(2));
        assert_eq!(g.observe_bounded(at(0), WALL, far, peers), Err(1_000));
        assert!(g.micros() < far.micros, "a refused stamp moved the clock");
        let near = Timestamp::new(WALL + MAX, 0, NodeId(2));
        assert_eq!(g.observe_bounded(at(0), WALL, near, peers), Ok(()));
        assert!(g.stamp(WALL) > near);
    }

    #[test]
    fn the_bound_follows_the_cluster_median_not_our_clock() {
        let mut g = guard();
        // Most peers are 2 s ahead of us: the cluster's time is WALL + 2 s.
        let peers = || vec![2_000_000, 2_000_000, 2_000_000, 0];
        let ts = Timestamp::new(WALL + 2_000_000 + MAX / 2, 0, NodeId(2));
        assert_eq!(g.observe_bounded(at(0), WALL, ts, peers), Ok(()));
        let check = g.check_own_offset(at(0), peers);
        assert_eq!(check.offset_micros, -2_000_000);
        assert!(check.off && check.changed);
        // Still off: no change to report.
        assert!(!g.check_own_offset(at(1), peers).changed);
    }

    #[test]
    fn the_median_is_cached_for_100_ms() {
        let mut g = guard();
        assert_eq!(g.median_offset(at(0), || vec![7, 7]), 7);
        assert_eq!(g.median_offset(at(50), || vec![9, 9]), 7);
        assert_eq!(g.median_offset(at(100), || vec![9, 9]), 9);
    }

    #[test]
    fn stamps_strictly_increase_even_when_the_wall_clock_goes_back() {
        let mut g = guard();
        let mut last = g.stamp(WALL);
        for wall in [WALL, WALL - 5_000_000, WALL + 1, WALL + 1, 0] {
            let ts = g.stamp(wall);
            assert!(ts > last, "{ts:?} after {last:?}");
            last = ts;
        }
    }
}
