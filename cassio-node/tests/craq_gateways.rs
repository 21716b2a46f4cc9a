//! Chain-replicated (craq) keyspaces through every client path, against a
//! real in-process single node (RF 1): created with `"mode": "craq"` over
//! the HTTP admin API and listed with its mode; `INCR`/`DECR`/`INCRBY`/
//! `DECRBY`, `SET ... IFEQ` and `SET ... NX` over RESP; `ETag`,
//! `If-Match`, `If-None-Match: *` and `/incr` over HTTP; `cas` and `incr`
//! from the Rust client; and the typed refusals on a last-write-wins
//! keyspace. A node uses a new chain epoch only a lease period (~2 s)
//! after it learns it, so requests refused as "chain changing" are retried
//! for a bounded time.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use cassio_core::{ClientError, Consistency};
use cassio_node::client::{Client, Error};
use cassio_node::{NodeBuilder, RunningNode};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::MemStore;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a request refused as retryable (chain changing, joining) is
/// retried.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// Bound on the keyspace creation (the schema is founded first).
const CREATE_WAIT: Duration = Duration::from_secs(20);

async fn node() -> RunningNode {
    let transport =
        TcpTransport::bind("127.0.0.1:0".parse().unwrap(), TcpConfig::plaintext("craq"))
            .await
            .unwrap();
    NodeBuilder::new(1, "craq")
        .transport(Arc::new(transport))
        .store(Arc::new(MemStore::new()))
        .replication_factor(1)
        .default_consistency(Consistency::One)
        .gossip_interval(Duration::from_millis(100))
        .client_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

/// Sends `make()` until it is not a 503 (joining, no quorum yet, chain
/// changing), for at most `within`.
async fn http_retrying(
    within: Duration,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> reqwest::Response {
    let deadline = Instant::now() + within;
    loop {
        let resp = make().send().await.unwrap();
        if resp.status() != 503 || Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `f` until it does not fail with `ChainChanging` (or `Joining`),
/// for at most [`RETRY_FOR`].
async fn client_retrying<T, F, Fut>(mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match f().await {
            Err(e)
                if matches!(
                    e.client_error(),
                    Some(ClientError::ChainChanging | ClientError::Joining)
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

/// One RESP command, retried while it is answered `-TRYAGAIN`.
fn resp<T: redis::FromRedisValue>(
    c: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query::<T>(c) {
            Err(e)
                if (e.kind() == redis::ErrorKind::TryAgain
                    || e.to_string().contains("TRYAGAIN"))
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

fn resp_checks(addr: SocketAddr) {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ok: String = resp(&mut c, &["CASSIO.KEYSPACE", "locks"]).unwrap();
    assert_eq!(ok, "OK");

    // Increments: integer replies, the value read back.
    assert_eq!(resp::<i64>(&mut c, &["INCR", "n"]).unwrap(), 1);
    assert_eq!(resp::<i64>(&mut c, &["INCRBY", "n", "10"]).unwrap(), 11);
    assert_eq!(resp::<i64>(&mut c, &["DECR", "n"]).unwrap(), 10);
    assert_eq!(resp::<i64>(&mut c, &["DECRBY", "n", "3"]).unwrap(), 7);
    assert_eq!(
        resp::<Option<String>>(&mut c, &["GET", "n"])
            .unwrap()
            .as_deref(),
        Some("7")
    );
    let e = resp::<i64>(&mut c, &["INCRBY", "n", "ten"]).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    let e = resp::<i64>(&mut c, &["DECRBY", "n", "-9223372036854775808"]).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");

    // SET ... IFEQ: a swap, then a refused one; the value read back.
    let ok: String = resp(&mut c, &["SET", "s", "a"]).unwrap();
    assert_eq!(ok, "OK");
    let r: Option<String> = resp(&mut c, &["SET", "s", "b", "IFEQ", "a"]).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = resp(&mut c, &["SET", "s", "c", "IFEQ", "a"]).unwrap();
    assert_eq!(r, None);
    assert_eq!(
        resp::<Option<String>>(&mut c, &["GET", "s"])
            .unwrap()
            .as_deref(),
        Some("b")
    );
    // A value that is no integer cannot be incremented: the node's error.
    let e = resp::<i64>(&mut c, &["INCR", "s"]).unwrap_err();
    assert!(e.to_string().contains("invalid operation"), "{e}");
    assert!(resp::<String>(&mut c, &["SET", "s", "b", "IFEQ"]).is_err());

    // SET ... NX and SETNX: one compare-and-set against absence.
    let r: Option<String> = resp(&mut c, &["SET", "x", "1", "NX"]).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = resp(&mut c, &["SET", "x", "2", "NX"]).unwrap();
    assert_eq!(r, None);
    assert_eq!(
        resp::<Option<String>>(&mut c, &["GET", "x"])
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(resp::<i64>(&mut c, &["SETNX", "y", "1"]).unwrap(), 1);
    assert_eq!(resp::<i64>(&mut c, &["SETNX", "y", "2"]).unwrap(), 0);
    assert_eq!(
        resp::<Option<String>>(&mut c, &["GET", "y"])
            .unwrap()
            .as_deref(),
        Some("1")
    );

    // On the last-write-wins `default`: the node's typed refusal.
    let ok: String = resp(&mut c, &["CASSIO.KEYSPACE", "default"]).unwrap();
    assert_eq!(ok, "OK");
    let e = resp::<i64>(&mut c, &["INCR", "n"]).unwrap_err();
    assert!(
        e.to_string().contains("invalid operation") && e.to_string().contains("chain-replicated"),
        "{e}"
    );
    let e = resp::<Option<String>>(&mut c, &["SET", "s", "b", "IFEQ", "a"]).unwrap_err();
    assert!(e.to_string().contains("invalid operation"), "{e}");
    // NX keeps its read-then-write meaning there.
    let r: Option<String> = resp(&mut c, &["SET", "lww", "1", "NX"]).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = resp(&mut c, &["SET", "lww", "2", "NX"]).unwrap();
    assert_eq!(r, None);
}

async fn http_checks(http: &reqwest::Client, base: &str) {
    let kv = format!("{base}/ks/locks/kv/h");
    let put = http_retrying(RETRY_FOR, || http.put(&kv).body("v1")).await;
    assert_eq!(put.status(), 200, "{:?}", put.text().await);
    let got = http_retrying(RETRY_FOR, || http.get(&kv)).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["etag"], "\"7631\"");
    assert_eq!(got.bytes().await.unwrap(), "v1");

    // If-Match: swapped (200, the new ETag), then stale (412).
    let swap = http_retrying(RETRY_FOR, || {
        http.put(&kv).header("If-Match", "\"7631\"").body("v2")
    })
    .await;
    assert_eq!(swap.status(), 200);
    assert_eq!(swap.headers()["etag"], "\"7632\"");
    let body: Value = swap.json().await.unwrap();
    assert_eq!(body["swapped"], true);
    let stale = http_retrying(RETRY_FOR, || {
        http.put(&kv).header("If-Match", "\"7631\"").body("v3")
    })
    .await;
    assert_eq!(stale.status(), 412);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"], "precondition_failed");
    let got = http_retrying(RETRY_FOR, || http.get(&kv)).await;
    assert_eq!(got.bytes().await.unwrap(), "v2");
    for bad in ["7632", "W/\"7632\"", "\"763\"", "\"zz\"", "*"] {
        let r = http
            .put(&kv)
            .header("If-Match", bad)
            .body("v9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "If-Match {bad}");
    }

    // If-None-Match: * sets only an absent key.
    let fresh = format!("{base}/ks/locks/kv/fresh");
    let first = http_retrying(RETRY_FOR, || {
        http.put(&fresh).header("If-None-Match", "*").body("one")
    })
    .await;
    assert_eq!(first.status(), 200);
    let second = http_retrying(RETRY_FOR, || {
        http.put(&fresh).header("If-None-Match", "*").body("two")
    })
    .await;
    assert_eq!(second.status(), 412);
    let got = http_retrying(RETRY_FOR, || http.get(&fresh)).await;
    assert_eq!(got.bytes().await.unwrap(), "one");

    // The increment endpoint.
    let incr = format!("{base}/ks/locks/incr/c");
    let r = http_retrying(RETRY_FOR, || http.post(format!("{incr}?by=5"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["value"], 5);
    let r = http_retrying(RETRY_FOR, || http.post(format!("{incr}?by=-2"))).await;
    assert_eq!(r.json::<Value>().await.unwrap()["value"], 3);
    let r = http_retrying(RETRY_FOR, || http.post(&incr)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["value"], 4);
    let got = http_retrying(RETRY_FOR, || http.get(format!("{base}/ks/locks/kv/c"))).await;
    assert_eq!(got.bytes().await.unwrap(), "4");
    let r = http.post(format!("{incr}?by=x")).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // On `default` (last write wins): typed refusals, and no ETag.
    let r = http.post(format!("{base}/incr/c")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_op");
    let r = http
        .put(format!("{base}/kv/h"))
        .header("If-Match", "\"7631\"")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_op");
    let r = http
        .put(format!("{base}/kv/h"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{base}/kv/h")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("etag").is_none());
}

async fn client_checks(addr: SocketAddr) {
    let client = Client::connect(&[addr]).await.unwrap();
    let locks = client.keyspace("locks");
    assert!(client_retrying(|| locks.cas("cc", None, "a"))
        .await
        .unwrap());
    assert!(!client_retrying(|| locks.cas("cc", None, "b"))
        .await
        .unwrap());
    assert!(!client_retrying(|| locks.cas("cc", Some(b"zz"), "b"))
        .await
        .unwrap());
    assert!(client_retrying(|| locks.cas("cc", Some(b"a"), "b"))
        .await
        .unwrap());
    let v = client_retrying(|| locks.get("cc", None)).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"b"[..]));
    assert_eq!(client_retrying(|| locks.incr("ic", 4)).await.unwrap(), 4);
    assert_eq!(client_retrying(|| locks.incr("ic", -5)).await.unwrap(), -1);
    let v = client_retrying(|| locks.get("ic", None)).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"-1"[..]));

    // `default` is last-write-wins: both are refused, typed.
    let e = client.incr("ic", 1).await.unwrap_err();
    assert!(
        matches!(e.client_error(), Some(ClientError::InvalidOp(_))),
        "{e:?}"
    );
    let e = client.cas("cc", None, "x").await.unwrap_err();
    assert!(
        matches!(e.client_error(), Some(ClientError::InvalidOp(_))),
        "{e:?}"
    );

    // Created over the native protocol too; the list names each mode.
    client.create_craq_keyspace("counters", 1).await.unwrap();
    let counters = client.keyspace("counters");
    assert_eq!(client_retrying(|| counters.incr("c", 2)).await.unwrap(), 2);
    let list = client.list_keyspaces().await.unwrap();
    let mode = |n: &str| {
        list.keyspaces
            .iter()
            .find(|k| k.name == n)
            .map(|k| k.strategy.clone())
    };
    assert_eq!(mode("locks").as_deref(), Some("craq"));
    assert_eq!(mode("counters").as_deref(), Some("craq"));
    assert_eq!(mode("default").as_deref(), Some("lww"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn craq_keyspaces_serve_atomic_operations_on_every_client_path() {
    let node = node().await;
    let resp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (resp_addr, http_addr) = (resp_l.local_addr().unwrap(), http_l.local_addr().unwrap());
    let resp_task = tokio::spawn(cassio_node::gateway::serve_resp(
        resp_l,
        node.handle(),
        node.shutdown_signal(),
    ));
    let http_task = tokio::spawn(cassio_node::gateway::serve_http(
        http_l,
        node.handle(),
        node.shutdown_signal(),
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("http://{http_addr}");

    // Created over the admin API once the node takes schema changes.
    let admin = format!("{base}/admin/keyspaces");
    let created = http_retrying(CREATE_WAIT, || {
        http.post(&admin)
            .json(&serde_json::json!({"name": "locks", "replication_factor": 1, "mode": "craq"}))
    })
    .await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    // Refused: an unknown mode, datacenters with craq.
    let r = http
        .post(&admin)
        .json(&serde_json::json!({"name": "m", "replication_factor": 1, "mode": "paxos"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&admin)
        .json(&serde_json::json!({"name": "m", "datacenters": {"dc1": 1}, "mode": "craq"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let list: Value = http.get(&admin).send().await.unwrap().json().await.unwrap();
    let mode = |n: &str| {
        list["keyspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == n)
            .map(|k| k["mode"].clone())
    };
    assert_eq!(mode("locks"), Some(Value::from("craq")));
    assert_eq!(mode("default"), Some(Value::from("lww")));

    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || resp_checks(resp_addr)),
    )
    .await
    .expect("RESP checks finish in time")
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), http_checks(&http, &base))
        .await
        .expect("HTTP checks finish in time");
    let client_addr = node.client_addr().unwrap();
    tokio::time::timeout(Duration::from_secs(60), client_checks(client_addr))
        .await
        .expect("client checks finish in time");

    node.shutdown(false).await.unwrap();
    for task in [resp_task, http_task] {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("gateway stops with the node")
            .unwrap()
            .unwrap();
    }
}
