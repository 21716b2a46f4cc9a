//! The process-wide Prometheus recorder behind `/metrics`.

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Building or installing the recorder failed; most often another
    /// `metrics` recorder was installed in this process first.
    #[error("cannot install the Prometheus recorder: {0}")]
    Install(#[from] BuildError),
}

/// The installed recorder's handle; a mutex rather than a `OnceLock` so two
/// threads racing to install cannot both try (the second would fail).
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Latency buckets in seconds, from a cached local read (tens of µs) to the
/// default request timeout (2 s) and past it.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// How often recorded histogram samples are folded into their buckets; until
/// then they are held in memory, so nobody scraping must not mean a leak.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as this process's `metrics` recorder and
/// returns a handle that renders the text format. Idempotent: later calls
/// return the same handle. Call it before recording anything that should
/// show up (samples recorded earlier went to the no-op recorder).
pub fn install_metrics() -> Result<PrometheusHandle, MetricsError> {
    // A poisoned lock only means another thread panicked while installing;
    // the Option inside is still meaningful.
    let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("cassio-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
    if let Err(e) = spawned {
        // Rendering also folds samples in, so scraping keeps memory bounded.
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
    let _ = HANDLES.set(Handles::register());
    *slot = Some(handle.clone());
    Ok(handle)
}

/// The gateways' `protocol` label values.
pub(crate) const PROTOCOLS: [&str; 2] = ["resp", "http"];
/// The `op` label values.
pub(crate) const OPS: [&str; 4] = ["get", "put", "delete", "scan"];
/// The `result` label values.
pub(crate) const RESULTS: [&str; 8] = [
    "ok",
    "unavailable",
    "timeout",
    "replica_failure",
    "bad_request",
    "not_running",
    "error",
    "overloaded",
];

/// The gateways' metric handles, registered once with the Prometheus
/// recorder: looking a metric up by name and labels on every request
/// (hashing, cloning labels) cost several percent of a pipelined RESP
/// gateway's CPU. Registering every combination up front also makes each
/// series visible at zero before its first event.
pub(crate) struct Handles {
    requests: Vec<Counter>,
    durations: Vec<Histogram>,
    /// The driver's `cassio_requests_total{result="ok"}` per [`DRIVER_OPS`].
    driver_ok: Vec<Counter>,
    /// The driver's `cassio_request_duration_seconds` per [`DRIVER_OPS`].
    driver_durations: Vec<Histogram>,
    /// `cassio_storage_inline_ops_total`, counted on every storage dispatch.
    storage_inline: Counter,
}

/// The driver's `op` label values (its own names, older than the gateways').
pub(crate) const DRIVER_OPS: [&str; 4] = ["get", "set", "del", "scan"];

/// Set by [`install_metrics`]; without it the gateways use the `metrics`
/// macros, so another recorder installed by the embedding program works.
static HANDLES: OnceLock<Handles> = OnceLock::new();

impl Handles {
    fn register() -> Self {
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for protocol in PROTOCOLS {
            for op in OPS {
                durations.push(metrics::histogram!(
                    "cassio_gateway_request_duration_seconds",
                    "protocol" => protocol,
                    "op" => op
                ));
                for result in RESULTS {
                    requests.push(metrics::counter!(
                        "cassio_gateway_requests_total",
                        "protocol" => protocol,
                        "op" => op,
                        "result" => result
                    ));
                }
            }
        }
        Handles {
            requests,
            durations,
            driver_ok: DRIVER_OPS
                .iter()
                .map(|&op| metrics::counter!("cassio_requests_total", "op" => op, "result" => "ok"))
                .collect(),
            driver_durations: DRIVER_OPS
                .iter()
                .map(|&op| metrics::histogram!("cassio_request_duration_seconds", "op" => op))
                .collect(),
            storage_inline: metrics::counter!("cassio_storage_inline_ops_total"),
        }
    }

    /// The registered handles, if [`install_metrics`] ran.
    pub(crate) fn get() -> Option<&'static Handles> {
        HANDLES.get()
    }

    /// The request counter for these label indexes.
    pub(crate) fn request(&self, protocol: usize, op: usize, result: usize) -> Option<&Counter> {
        self.requests
            .get((protocol * OPS.len() + op) * RESULTS.len() + result)
    }

    /// The driver's success counter and latency histogram for `op` (one of
    /// [`DRIVER_OPS`]), the two it records for every request answered.
    pub(crate) fn driver(&self, op: &str) -> Option<(&Counter, &Histogram)> {
        let i = DRIVER_OPS.iter().position(|&o| o == op)?;
        Some((self.driver_ok.get(i)?, self.driver_durations.get(i)?))
    }

    /// The counter of storage operations the driver ran on its loop.
    pub(crate) fn storage_inline(&self) -> &Counter {
        &self.storage_inline
    }

    /// The latency histogram for these label indexes.
    pub(crate) fn duration(&self, protocol: usize, op: usize) -> Option<&Histogram> {
        self.durations.get(protocol * OPS.len() + op)
    }
}
