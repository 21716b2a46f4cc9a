//! Both gateways in front of a real single node: native store in a temp
//! dir, TCP transport, RF=1.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use cassio_node::builder::NodeBuilder;
use cassio_store_native::NativeStore;
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_serve_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let transport = TcpTransport::bind("127.0.0.1:0".parse().unwrap(), TcpConfig::plaintext("gw"))
        .await
        .unwrap();
    let store = NativeStore::open(dir.path(), Default::default()).unwrap();
    let node = NodeBuilder::new(1, "gw")
        .transport(Arc::new(transport))
        .store(Arc::new(store))
        .replication_factor(1)
        .start()
        .await
        .unwrap();

    let resp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (resp_addr, http_addr) = (resp_l.local_addr().unwrap(), http_l.local_addr().unwrap());
    let resp = tokio::spawn(cassio_node::gateway::serve_resp(
        resp_l,
        node.handle(),
        node.shutdown_signal(),
    ));
    let http = tokio::spawn(cassio_node::gateway::serve_http(
        http_l,
        node.handle(),
        node.shutdown_signal(),
    ));

    // Written through RESP, read back through HTTP, and the reverse.
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let client = redis::Client::open(format!("redis://{resp_addr}/")).unwrap();
            let mut c = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let ok: String = redis::cmd("SET")
                .arg("from-resp")
                .arg("1")
                .query(&mut c)
                .unwrap();
            assert_eq!(ok, "OK");
            let mut p = redis::pipe();
            for i in 0..100 {
                p.cmd("SET").arg(format!("k{i}")).arg(i);
            }
            for i in 0..100 {
                p.cmd("GET").arg(format!("k{i}"));
            }
            let out: Vec<redis::Value> = p.query(&mut c).unwrap();
            assert_eq!(out[199], redis::Value::BulkString(b"99".to_vec()));
            let n: i64 = redis::cmd("DEL")
                .arg("k1")
                .arg("k2")
                .arg("nope")
                .query(&mut c)
                .unwrap();
            assert_eq!(n, 2);
            let v: Option<String> = redis::cmd("GET").arg("k1").query(&mut c).unwrap();
            assert_eq!(v, None);
        }),
    )
    .await
    .unwrap()
    .unwrap();

    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{http_addr}");
    let r = c.get(format!("{base}/kv/from-resp")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), "1");
    let r = c
        .post(format!("{base}/kv/user1"))
        .body(r#"{"name": "Jack"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/kv/user1?consistency=one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), r#"{"name": "Jack"}"#);
    // RF=1: ALL is one replica too, so it succeeds; TWO cannot.
    let r = c
        .get(format!("{base}/kv/user1?consistency=all"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/kv/user1?consistency=two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{:?}", r.text().await);
    let st: serde_json::Value = c
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["cluster"], "gw");
    assert_eq!(st["members"][0]["state"], "Normal");
    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // An operator's repair: on one node every round has no pair, so it
    // ends as soon as the node's trees are built.
    let peer = node.local_addr();
    for (query, why) in [
        ("keyspace=nope".to_string(), "unknown keyspace \"nope\""),
        (format!("node={peer}"), "is this node"),
        (
            "node=127.0.0.1:1".to_string(),
            "no member listens at 127.0.0.1:1",
        ),
    ] {
        let r = c
            .post(format!("{base}/admin/repair?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap_or_default().contains(why),
            "{query}: {body}"
        );
    }
    for (query, scoped) in [("", false), ("?keyspace=default", true)] {
        let r = c
            .post(format!("{base}/admin/repair{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let started: cassio_node::RepairStarted = r.json().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let st = loop {
            let st: cassio_node::ClusterStatus = c
                .get(format!("{base}/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if st.repair.rounds_ended >= started.round {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {} never ended: {:?}",
                started.round,
                st.repair
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let ours = st
            .repair
            .recent_rounds
            .iter()
            .find(|o| o.number == started.round)
            .copied()
            .unwrap();
        assert_eq!((ours.pairs, ours.failed), (0, 0), "{ours:?}");
        let after = (
            st.repair.rounds_completed,
            st.repair.scoped_rounds_completed,
        );
        if scoped {
            // Ours, the only scoped round; it did not move the watermark
            // past the full rounds'.
            assert_eq!(after.1, 1, "{after:?}");
        } else {
            assert!(after.0 >= 1, "{after:?}");
            assert!(st.repair.repaired_through > 0, "{:?}", st.repair);
        }
        assert_eq!(st.state, "Normal");
        assert!(st.repair.trees_ready);
    }
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.lines().any(|l| l == "cassio_node_syncing 0"), "{text}");
    let full_rounds = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"cassio_repair_rounds_total{scope="full"} "#))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(full_rounds.is_some_and(|n| n >= 1), "{text}");
    assert!(
        text.lines()
            .any(|l| l == r#"cassio_repair_rounds_total{scope="scoped"} 1"#),
        "{text}"
    );

    // Node shutdown stops both gateways through its signal.
    node.shutdown(false).await.unwrap();
    for task in [resp, http] {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("gateway stops with the node")
            .unwrap()
            .unwrap();
    }
}
