//! Monotonic time as the core sees it: a number of microseconds from an
//! origin the host chooses. The core never reads a clock; hosts map their
//! clock (or the simulator its virtual time) onto this type.

use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in monotonic time, in microseconds since the host's origin.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    /// The host's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the origin.
    pub fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// Microseconds since the origin.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(micros))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// What the host tells the core about time with every input: the monotonic
/// instant, and the wall clock (microseconds since the Unix epoch) read at
/// the same moment. The hybrid logical clock takes the maximum with the wall
/// clock on every input, so a wall clock that steps forward is followed at
/// once and one that steps back is ridden out.
///
/// An [`Instant`] converts into a `Now` without a wall reading; the core then
/// derives the wall clock from the reading given at start plus the monotonic
/// time elapsed (what hosts that cannot read a wall clock, and old tests, get).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: deadlines, timers and failure detection use it.
    pub mono: Instant,
    /// The wall clock at `mono`, if the host read it.
    pub wall_micros: Option<u64>,
}

impl Now {
    /// A reading of both clocks.
    pub fn new(mono: Instant, wall_micros: u64) -> Self {
        Now {
            mono,
            wall_micros: Some(wall_micros),
        }
    }
}

impl From<Instant> for Now {
    fn from(mono: Instant) -> Self {
        Now {
            mono,
            wall_micros: None,
        }
    }
}
