//! `/metrics`: the node's repair, hint and state series, copied from its
//! status when scraped. Alone in its own test binary because the recorder
//! (and so every series) is per process.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use cassio_node::handle::PendingHints;
use gateway_common::{serve_http, spawn_fake};
use std::time::Duration;

async fn scrape(c: &reqwest::Client, base: &str) -> String {
    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn assert_has(text: &str, lines: &[&str]) {
    for want in lines {
        assert!(
            text.lines().any(|l| l == *want),
            "missing `{want}` in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_and_hint_series_appear_and_follow_the_status() {
    let fake = spawn_fake();
    {
        let mut st = fake.status.lock().unwrap();
        st.state = "Syncing".into();
        st.hints.stored = 5;
        st.hints.delivered = 2;
        st.hints.dropped_cap = 1;
        st.hints.dropped_window = 3;
        st.hints.pending = vec![PendingHints {
            node_id: 7,
            bytes: 4096,
        }];
        st.repair.rounds_completed = 1;
        st.repair.exchanges_completed = 4;
        st.repair.exchanges_failed = 1;
        st.repair.segments_repaired = 2;
        st.repair.keys_compared = 1000;
        st.repair.items_pushed = 10;
        st.repair.items_pulled = 20;
        st.repair.bytes_sent = 3000;
        st.repair.tree_items = 500;
        st.repair.tree_memory_bytes = 65536;
        st.repair.last_round_completed = 1_700_000_000_000_000;
    }
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let text = scrape(&c, &base).await;
    assert_has(
        &text,
        &[
            "cassio_node_syncing 1",
            r#"cassio_hints_pending_bytes{target="7"} 4096"#,
            "cassio_hints_stored_total 5",
            "cassio_hints_delivered_total 2",
            r#"cassio_hints_dropped_total{reason="cap"} 1"#,
            r#"cassio_hints_dropped_total{reason="window"} 3"#,
            r#"cassio_hints_dropped_total{reason="expired"} 0"#,
            r#"cassio_repair_rounds_total{scope="full"} 1"#,
            r#"cassio_repair_rounds_total{scope="scoped"} 0"#,
            r#"cassio_repair_exchanges_total{result="ok"} 4"#,
            r#"cassio_repair_exchanges_total{result="failed"} 1"#,
            "cassio_repair_segments_repaired_total 2",
            "cassio_repair_keys_compared_total 1000",
            r#"cassio_repair_items_total{direction="pushed"} 10"#,
            r#"cassio_repair_items_total{direction="pulled"} 20"#,
            "cassio_repair_bytes_total 3000",
            "cassio_repair_tree_items 500",
            "cassio_repair_tree_bytes 65536",
            "cassio_repair_last_round_timestamp_seconds 1700000000",
        ],
    );

    // The node caught up, delivered its hints and ran another round.
    {
        let mut st = fake.status.lock().unwrap();
        st.state = "Normal".into();
        st.hints.delivered = 5;
        st.hints.pending.clear();
        st.repair.rounds_completed = 2;
        st.repair.scoped_rounds_completed = 1;
        st.repair.keys_compared = 2500;
        st.repair.items_pulled = 21;
        st.repair.tree_items = 501;
    }
    let text = scrape(&c, &base).await;
    assert_has(
        &text,
        &[
            "cassio_node_syncing 0",
            // A target no longer listed reads 0, not its last value.
            r#"cassio_hints_pending_bytes{target="7"} 0"#,
            "cassio_hints_delivered_total 5",
            r#"cassio_repair_rounds_total{scope="full"} 2"#,
            r#"cassio_repair_rounds_total{scope="scoped"} 1"#,
            "cassio_repair_keys_compared_total 2500",
            r#"cassio_repair_items_total{direction="pulled"} 21"#,
            "cassio_repair_tree_items 501",
        ],
    );
    srv.shutdown().await;
}
