//! The node's repair, hint and state figures as Prometheus series, taken
//! from its status snapshot when `/metrics` is scraped.
//!
//! The core keeps these counters itself (they are part of its status, which
//! `/status` and `cassio repair` read too); copying them at scrape time
//! keeps `/metrics` exactly as fresh as `/status`, costs nothing between
//! scrapes, and lets several nodes in one process (tests, `local-cluster`)
//! each report their own figures through their own HTTP port.
//!
//! | series | kind | what |
//! | --- | --- | --- |
//! | `cassio_node_syncing` | gauge | 1 while this node is `Syncing` (restarted, not yet caught up) |
//! | `cassio_hints_pending_bytes{target}` | gauge | hint bytes held for the replica with that node id |
//! | `cassio_hints_stored_total` | counter | hints stored |
//! | `cassio_hints_delivered_total` | counter | hints delivered and acknowledged |
//! | `cassio_hints_dropped_total{reason}` | counter | hints not kept: `cap`, `window`, `expired` |
//! | `cassio_hints_failed_total` | counter | hints the hint log could not store |
//! | `cassio_repair_rounds_total{scope}` | counter | completed rounds: `full`, `scoped` (an operator's `cassio repair` over one keyspace or peer) |
//! | `cassio_repair_exchanges_total{result}` | counter | exchanges with a peer: `ok`, `failed` |
//! | `cassio_repair_segments_repaired_total` | counter | tree segments found to differ |
//! | `cassio_repair_keys_compared_total` | counter | key digests compared |
//! | `cassio_repair_items_total{direction}` | counter | items `pushed` to peers, `pulled` from them |
//! | `cassio_repair_bytes_total` | counter | item bytes exchanged |
//! | `cassio_repair_tree_items` | gauge | items in this node's trees |
//! | `cassio_repair_tree_bytes` | gauge | memory the trees hold |
//! | `cassio_repair_last_round_timestamp_seconds` | gauge | end of the last completed full round (0: none) |
//! | `cassio_repair_watermark_timestamp_seconds` | gauge | start of the last round that synced every pair, down peers included (0: none) |

use crate::handle::ClusterStatus;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The hint targets reported so far, so a target whose hints were all
/// delivered (it leaves the status) is reported at 0 rather than frozen at
/// its last value.
#[derive(Debug, Default)]
pub(crate) struct Reported {
    targets: Mutex<BTreeSet<u64>>,
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Records `s`'s figures in the installed `metrics` recorder.
pub(crate) fn record(s: &ClusterStatus, reported: &Reported) {
    metrics::gauge!("cassio_node_syncing").set(if s.state == "Syncing" { 1.0 } else { 0.0 });

    let h = &s.hints;
    metrics::counter!("cassio_hints_stored_total").absolute(h.stored);
    metrics::counter!("cassio_hints_delivered_total").absolute(h.delivered);
    metrics::counter!("cassio_hints_dropped_total", "reason" => "cap").absolute(h.dropped_cap);
    metrics::counter!("cassio_hints_dropped_total", "reason" => "window")
        .absolute(h.dropped_window);
    metrics::counter!("cassio_hints_dropped_total", "reason" => "expired")
        .absolute(h.dropped_expired);
    metrics::counter!("cassio_hints_failed_total").absolute(h.failed);
    {
        // A poisoned lock only means a panic elsewhere mid-update; the set
        // is still a usable list of targets.
        let mut seen = reported.targets.lock().unwrap_or_else(|p| p.into_inner());
        let now: BTreeSet<u64> = h.pending.iter().map(|p| p.node_id).collect();
        for gone in seen.difference(&now) {
            metrics::gauge!("cassio_hints_pending_bytes", "target" => gone.to_string()).set(0.0);
        }
        for p in &h.pending {
            metrics::gauge!("cassio_hints_pending_bytes", "target" => p.node_id.to_string())
                .set(p.bytes as f64);
        }
        seen.extend(now);
    }

    let r = &s.repair;
    metrics::counter!("cassio_repair_rounds_total", "scope" => "full").absolute(r.rounds_completed);
    metrics::counter!("cassio_repair_rounds_total", "scope" => "scoped")
        .absolute(r.scoped_rounds_completed);
    metrics::counter!("cassio_repair_exchanges_total", "result" => "ok")
        .absolute(r.exchanges_completed);
    metrics::counter!("cassio_repair_exchanges_total", "result" => "failed")
        .absolute(r.exchanges_failed);
    metrics::counter!("cassio_repair_segments_repaired_total").absolute(r.segments_repaired);
    metrics::counter!("cassio_repair_keys_compared_total").absolute(r.keys_compared);
    metrics::counter!("cassio_repair_items_total", "direction" => "pushed")
        .absolute(r.items_pushed);
    metrics::counter!("cassio_repair_items_total", "direction" => "pulled")
        .absolute(r.items_pulled);
    metrics::counter!("cassio_repair_bytes_total").absolute(r.bytes_sent);
    metrics::gauge!("cassio_repair_tree_items").set(r.tree_items as f64);
    metrics::gauge!("cassio_repair_tree_bytes").set(r.tree_memory_bytes as f64);
    metrics::gauge!("cassio_repair_last_round_timestamp_seconds")
        .set(seconds(r.last_round_completed));
    metrics::gauge!("cassio_repair_watermark_timestamp_seconds").set(seconds(r.repaired_through));
}
