//! The simulated network's behaviour.

use std::collections::BTreeMap;
use std::time::Duration;

/// How the simulated network behaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency (latencies are uniform in between, so frames
    /// sent close together may arrive reordered).
    pub max_latency: Duration,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Per-link latency ranges `(from, to) → (min, max)` that replace the
    /// defaults above on that directed link (e.g. a far-away node).
    pub links: BTreeMap<(usize, usize), (Duration, Duration)>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            min_latency: Duration::from_micros(200),
            max_latency: Duration::from_millis(2),
            loss: 0.0,
            duplicate: 0.0,
            links: BTreeMap::new(),
        }
    }
}
