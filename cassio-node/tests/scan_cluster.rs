//! Scans across a three-node in-process cluster (RF 3, QUORUM): RESP `SCAN`
//! with the Rust `redis` crate over 10,000 keys (no duplicate, no miss),
//! `KEYS` and `DBSIZE`, HTTP `GET /kv` paging, and the native client's
//! `scan` stream.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use cassio_core::{ClientError, Consistency};
use cassio_node::client::Client;
use cassio_node::{NodeBuilder, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const KEYS: usize = 10_000;

async fn node(id: u64, seeds: Vec<SocketAddr>) -> RunningNode {
    let transport = TcpTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::plaintext("scan-test"),
    )
    .await
    .unwrap();
    NodeBuilder::new(id, "scan-test")
        .transport(Arc::new(transport))
        .store(Arc::new(MemStore::new()))
        .seeds(seeds)
        .replication_factor(3)
        .default_consistency(Consistency::Quorum)
        .vnodes(16)
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// Waits until every node coordinates a QUORUM read (the cluster formed).
async fn wait_ready(addrs: &[SocketAddr]) {
    for &addr in addrs {
        let c = Client::connect(&[addr]).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match c.get("ready-probe", Some(Consistency::All)).await {
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.client_error(),
                        Some(ClientError::Joining | ClientError::Unavailable { .. })
                    ) => {}
                Err(e) => panic!("{e:?}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} never settled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_over_a_three_node_cluster() {
    let a = node(1, vec![]).await;
    let b = node(2, vec![a.local_addr()]).await;
    let c = node(3, vec![a.local_addr()]).await;
    let clients: Vec<SocketAddr> = [&a, &b, &c]
        .iter()
        .map(|n| n.client_addr().unwrap())
        .collect();
    wait_ready(&clients).await;

    let resp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (resp_addr, http_addr) = (resp_l.local_addr().unwrap(), http_l.local_addr().unwrap());
    // The gateways sit on node b: its scans coordinate reads on a and c too.
    let resp = tokio::spawn(cassio_node::gateway::serve_resp(
        resp_l,
        b.handle(),
        b.shutdown_signal(),
    ));
    let http = tokio::spawn(cassio_node::gateway::serve_http(
        http_l,
        b.handle(),
        b.shutdown_signal(),
    ));

    let started = std::time::Instant::now();
    let (keys_seen, keys_user, dbsize) = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::task::spawn_blocking(move || {
            let client = redis::Client::open(format!("redis://{resp_addr}/")).unwrap();
            let mut conn = client
                .get_connection_with_timeout(Duration::from_secs(5))
                .unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            // 10,000 keys in pipelines of 1,000; 100 of them under "user:".
            for chunk in 0..KEYS / 1000 {
                let mut p = redis::pipe();
                for i in chunk * 1000..(chunk + 1) * 1000 {
                    let key = if i < 100 {
                        format!("user:{i}")
                    } else {
                        format!("key:{i}")
                    };
                    p.cmd("SET").arg(key).arg(i).ignore();
                }
                let () = p.query(&mut conn).unwrap();
            }
            // SCAN with the crate's own cursor loop (it parses the cursor
            // as a number and stops at 0).
            let mut seen: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            let mut calls = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query(&mut conn)
                    .unwrap();
                seen.extend(batch);
                calls += 1;
                if next == 0 {
                    break;
                }
                assert_ne!(next, cursor, "the cursor must move");
                cursor = next;
            }
            assert!(calls > 1, "10,000 keys in pages of 500 take many calls");
            // The crate's iterator, with MATCH.
            let users: Vec<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg("user:*")
                .arg("COUNT")
                .arg(200)
                .clone()
                .iter(&mut conn)
                .unwrap()
                .collect();
            let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
            // KEYS within its bound answers; past it, it refuses.
            let ks: Vec<String> = redis::cmd("KEYS").arg("user:1?").query(&mut conn).unwrap();
            assert_eq!(ks.len(), 10, "{ks:?}");
            // One more key makes 10,001: past KEYS's bound of 10,000.
            let () = redis::cmd("SET")
                .arg("over:1")
                .arg("x")
                .query(&mut conn)
                .unwrap();
            let e = redis::cmd("KEYS")
                .arg("*")
                .query::<Vec<String>>(&mut conn)
                .unwrap_err();
            assert!(e.to_string().contains("SCAN"), "{e}");
            // TYPE other than string: nothing, at once.
            let (next, none): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(0)
                .arg("TYPE")
                .arg("hash")
                .query(&mut conn)
                .unwrap();
            assert_eq!((next, none.len()), (0, 0));
            let e = redis::cmd("SCAN")
                .arg("junk")
                .query::<redis::Value>(&mut conn);
            assert!(e.is_err());
            (seen, users, n)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    println!(
        "SCAN: {} keys returned for {KEYS} written, {} under user:*, DBSIZE {dbsize}, in {:?}",
        keys_seen.len(),
        keys_user.len(),
        started.elapsed()
    );
    let unique: BTreeSet<&String> = keys_seen.iter().collect();
    assert_eq!(unique.len(), keys_seen.len(), "SCAN returned duplicates");
    assert_eq!(keys_seen.len(), KEYS, "SCAN missed keys");
    let users: BTreeSet<&String> = keys_user.iter().collect();
    assert_eq!(users.len(), 100);
    assert!(users.iter().all(|k| k.starts_with("user:")));
    // An estimate from the first 1,000 keys' share of the ring.
    assert!(
        (8_000..=12_000).contains(&dbsize),
        "DBSIZE estimate {dbsize} too far from {KEYS}"
    );

    // HTTP: pages of 300 from node b, followed by cursor.
    let http_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("http://{http_addr}");
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    let mut pages = 0;
    let mut url = format!("{base}/kv?limit=300&prefix=key:");
    loop {
        let r = http_client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        let entries = body["entries"].as_array().unwrap();
        assert!(entries.len() <= 300);
        assert_eq!(body["count"].as_u64().unwrap() as usize, entries.len());
        for e in entries {
            let k = e["key"].as_str().unwrap().to_string();
            assert!(k.starts_with("key:"));
            let v = e["value"].as_str().unwrap().to_string();
            assert!(got.insert(k, v).is_none(), "duplicate across pages");
        }
        pages += 1;
        match body["cursor"].as_str() {
            Some(c) => url = format!("{base}/kv?limit=300&prefix=key:&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(got.len(), KEYS - 100);
    assert!(pages >= (KEYS - 100) / 300);
    assert_eq!(got["key:4242"], "4242");
    // A bad cursor and a bad limit are typed 400s.
    for q in [
        "cursor=AAAA",
        "cursor=!!",
        "limit=0",
        "limit=999999",
        "cursor=x&after=y",
    ] {
        let r = http_client
            .get(format!("{base}/kv?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
    }
    // "From a key": the rest of the scan in token order.
    let all: Vec<String> = {
        let r: serde_json::Value = http_client
            .get(format!("{base}/kv?prefix=user:&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all.len(), 100);
    let r: serde_json::Value = http_client
        .get(format!(
            "{base}/kv?prefix=user:&limit=1000&after={}",
            all[49]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest: Vec<String> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rest, all[50..].to_vec());

    // The native client's stream, from node c, in pages of 64.
    let client = Client::connect(&[clients[2]]).await.unwrap();
    let stream = client.scan("user:", 64, Some(Consistency::All));
    futures_util::pin_mut!(stream);
    let mut n = 0;
    while let Some(item) = stream.next().await {
        let (k, v) = item.unwrap();
        assert!(k.starts_with(b"user:"));
        let i: usize = std::str::from_utf8(&k[5..]).unwrap().parse().unwrap();
        assert_eq!(v, i.to_string());
        n += 1;
    }
    assert_eq!(n, 100);

    resp.abort();
    http.abort();
    for n in [a, b, c] {
        n.shutdown(false).await.unwrap();
    }
}
