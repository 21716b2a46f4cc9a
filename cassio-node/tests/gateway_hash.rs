//! Redis hashes (rows of cells) through the RESP gateway of a real single
//! node, with the `redis` crate: every hash command, RESP3 maps, and two
//! concurrent writers to different fields of one key both surviving.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use cassio_node::builder::NodeBuilder;
use cassio_store_native::NativeStore;
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use redis::{Commands, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn connect(addr: SocketAddr, resp3: bool) -> redis::Connection {
    let url = if resp3 {
        format!("redis://{addr}/?protocol=resp3")
    } else {
        format!("redis://{addr}/")
    };
    let client = redis::Client::open(url).unwrap();
    let c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hashes_on_a_real_node() {
    let dir = tempfile::tempdir().unwrap();
    let transport = TcpTransport::bind("127.0.0.1:0".parse().unwrap(), TcpConfig::plaintext("h"))
        .await
        .unwrap();
    let store = NativeStore::open(dir.path(), Default::default()).unwrap();
    let node = NodeBuilder::new(1, "h")
        .transport(Arc::new(transport))
        .store(Arc::new(store))
        .replication_factor(1)
        .start()
        .await
        .unwrap();
    let resp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = resp_l.local_addr().unwrap();
    let resp = tokio::spawn(cassio_node::gateway::serve_resp(
        resp_l,
        node.handle(),
        node.shutdown_signal(),
    ));
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http_l.local_addr().unwrap();
    let http = tokio::spawn(cassio_node::gateway::serve_http(
        http_l,
        node.handle(),
        node.shutdown_signal(),
    ));
    let native_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native_addr = native_l.local_addr().unwrap();
    let (stop_native, native_stop) = tokio::sync::watch::channel(false);
    let native = tokio::spawn(cassio_node::server::serve_client(
        native_l,
        node.handle(),
        native_stop,
    ));

    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let mut c = connect(addr, false);
            assert_eq!(q::<i64>(&mut c, &["HSET", "h", "b", "2", "a", "1"]), 2);
            assert_eq!(q::<i64>(&mut c, &["HSET", "h", "a", "one", "c", "3"]), 1);
            assert_eq!(
                q::<Option<String>>(&mut c, &["HGET", "h", "a"]).as_deref(),
                Some("one")
            );
            assert_eq!(q::<Option<String>>(&mut c, &["HGET", "h", "zz"]), None);
            assert_eq!(
                q::<Vec<Option<String>>>(&mut c, &["HMGET", "h", "c", "nope", "b"]),
                vec![Some("3".into()), None, Some("2".into())]
            );
            // Sorted by field name.
            assert_eq!(
                q::<Vec<String>>(&mut c, &["HKEYS", "h"]),
                vec!["a", "b", "c"]
            );
            assert_eq!(
                q::<Vec<String>>(&mut c, &["HVALS", "h"]),
                vec!["one", "2", "3"]
            );
            assert_eq!(q::<i64>(&mut c, &["HLEN", "h"]), 3);
            assert_eq!(q::<i64>(&mut c, &["HEXISTS", "h", "b"]), 1);
            assert_eq!(q::<i64>(&mut c, &["HDEL", "h", "b", "b", "nope"]), 1);
            assert_eq!(q::<i64>(&mut c, &["HEXISTS", "h", "b"]), 0);
            assert_eq!(q::<i64>(&mut c, &["HSETNX", "h", "a", "x"]), 0);
            assert_eq!(q::<i64>(&mut c, &["HSETNX", "h", "d", "4"]), 1);
            let all: BTreeMap<String, String> = q(&mut c, &["HGETALL", "h"]);
            assert_eq!(
                all.into_iter().collect::<Vec<_>>(),
                vec![
                    ("a".into(), "one".into()),
                    ("c".into(), "3".into()),
                    ("d".into(), "4".into())
                ]
            );
            assert_eq!(q::<String>(&mut c, &["HMSET", "h2", "f", "v"]), "OK");
            // TYPE: a plain key, a hash, nothing.
            assert_eq!(q::<String>(&mut c, &["SET", "s", "v"]), "OK");
            assert_eq!(q::<String>(&mut c, &["TYPE", "s"]), "string");
            assert_eq!(q::<String>(&mut c, &["TYPE", "h"]), "hash");
            // Scans list string keys only: the hashes' cells are not keys.
            let mut keys: Vec<String> = q(&mut c, &["KEYS", "*"]);
            keys.sort();
            assert_eq!(keys, vec!["s".to_string()]);
            assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
            assert_eq!(q::<String>(&mut c, &["TYPE", "none"]), "none");
            // A plain key and a hash of one name are apart.
            assert_eq!(q::<Option<String>>(&mut c, &["GET", "h"]), None);
            // Wrong arity is an error and the connection lives.
            let e = redis::cmd("HSET").arg("h").arg("f").query::<i64>(&mut c);
            assert!(e
                .unwrap_err()
                .to_string()
                .contains("wrong number of arguments"));

            // HSCAN over 250 fields: every field once, with MATCH too.
            let mut p = redis::pipe();
            for i in 0..250 {
                p.cmd("HSET")
                    .arg("big")
                    .arg(format!("f{i:03}"))
                    .arg(i)
                    .ignore();
            }
            p.query::<()>(&mut c).unwrap();
            let seen: Vec<(String, String)> = c.hscan("big").unwrap().collect();
            assert_eq!(seen.len(), 250);
            let mut names: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
            names.dedup();
            assert_eq!(names.len(), 250, "no field twice");
            let matched: Vec<(String, String)> = c.hscan_match("big", "f1?0").unwrap().collect();
            assert_eq!(matched.len(), 10, "{matched:?}");

            // RESP3: HGETALL is a map.
            let mut c3 = connect(addr, true);
            let v: Value = q(&mut c3, &["HGETALL", "h"]);
            match v {
                Value::Map(pairs) => assert_eq!(pairs.len(), 3),
                other => panic!("HGETALL in RESP3 answered {other:?}"),
            }

            // Two writers, different fields of one key, concurrently: both
            // survive every round (last write wins per field).
            for round in 0..20 {
                let key = format!("shared-{round}");
                let writers: Vec<_> = ["left", "right"]
                    .into_iter()
                    .map(|field| {
                        let key = key.clone();
                        std::thread::spawn(move || {
                            let mut w = connect(addr, false);
                            for i in 0..10 {
                                let _: i64 = redis::cmd("HSET")
                                    .arg(&key)
                                    .arg(field)
                                    .arg(i)
                                    .query(&mut w)
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for w in writers {
                    w.join().unwrap();
                }
                let all: BTreeMap<String, String> = q(&mut c, &["HGETALL", &key]);
                assert_eq!(
                    all.into_iter().collect::<Vec<_>>(),
                    vec![("left".into(), "9".into()), ("right".into(), "9".into())],
                    "round {round}"
                );
            }
        }),
    )
    .await
    .unwrap()
    .unwrap();

    // HTTP: cells as `?column=`, row reads as `?columns` (JSON).
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{http_addr}");
    for (col, v) in [
        ("email", "a@x"),
        ("name", "Ann"),
        ("nick", "an"),
        ("zip", "0150"),
    ] {
        let r = c
            .put(format!("{base}/kv/user%2F1?column={col}"))
            .body(v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let r = c
        .get(format!("{base}/kv/user%2F1?column=name"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), "Ann");
    let r = c
        .get(format!("{base}/kv/user%2F1?column=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The plain key of the row's name is another item.
    let r = c.get(format!("{base}/kv/user%2F1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let row = |q: &str| {
        let c = c.clone();
        let url = format!("{base}/kv/user%2F1?columns{q}");
        async move {
            let v: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
            let cols: Vec<String> = v["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["column"].as_str().unwrap().to_string())
                .collect();
            (cols, v["more"].as_bool().unwrap(), v)
        }
    };
    let (cols, more, v) = row("").await;
    assert_eq!(cols, vec!["email", "name", "nick", "zip"]);
    assert!(!more);
    assert_eq!(v["row"], "user/1");
    assert_eq!(v["columns"][1]["value"], "Ann");
    assert_eq!(row("&prefix=n").await.0, vec!["name", "nick"]);
    let (cols, more, _) = row("&from=e&to=z&limit=2").await;
    assert_eq!(cols, vec!["email", "name"]);
    assert!(more);
    let r = c
        .delete(format!("{base}/kv/user%2F1?column=nick"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(row("").await.0, vec!["email", "name", "zip"]);
    // The path form `/kv/{row}/{column}` addresses the same cells (the
    // row's own slash travels as %2F, the column's too).
    let r = c
        .put(format!("{base}/kv/user%2F1/city%2Fzone"))
        .body("Oslo/West")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = c
        .get(format!("{base}/kv/user%2F1/name"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), "Ann");
    let r = c
        .get(format!("{base}/kv/user%2F1?column=city%2Fzone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "Oslo/West");
    let r = c
        .delete(format!("{base}/kv/user%2F1/city%2Fzone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/kv/user%2F1/city%2Fzone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Both forms at once, or an empty column: 400.
    let r = c
        .get(format!("{base}/kv/user%2F1/name?column=name"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(format!("{base}/kv/user%2F1/")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(row("").await.0, vec!["email", "name", "zip"]);
    let r = c
        .get(format!("{base}/kv/user%2F1?columns&limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r: serde_json::Value = c
        .delete(format!("{base}/kv/user%2F1?columns"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["deleted"], 3);
    assert!(row("").await.0.is_empty());
    // Also under /ks/{keyspace}.
    let r = c
        .put(format!("{base}/ks/default/kv/r2?column=c"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The Rust client.
    let client = cassio_node::client::Client::connect(&[native_addr])
        .await
        .unwrap();
    client.hset("cr", "b", "2", None).await.unwrap();
    client.hset("cr", "a", "1", None).await.unwrap();
    assert_eq!(
        client.hget("cr", "a", None).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    client.hdel("cr", "b", None).await.unwrap();
    assert_eq!(client.hget("cr", "b", None).await.unwrap(), None);
    let all = client.hgetall("r2", None).await.unwrap();
    assert_eq!(
        all,
        vec![(bytes::Bytes::from("c"), bytes::Bytes::from("v"))]
    );
    assert_eq!(
        client.hgetall("cr", None).await.unwrap(),
        vec![(bytes::Bytes::from("a"), bytes::Bytes::from("1"))]
    );

    // The CLI, over the native port.
    let node_arg = native_addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let cli = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cassio"))
                .args(args)
                .args(["--node", &node_arg])
                .output()
                .unwrap();
            assert!(out.status.success(), "cassio {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        assert!(cli(&["hset", "cli-row", "b", "2"]).starts_with("OK "));
        assert!(cli(&["hset", "cli-row", "a", "1"]).starts_with("OK "));
        assert_eq!(cli(&["hget", "cli-row", "a"]), "1\n");
        assert_eq!(cli(&["hget", "cli-row", "zz"]), "(nil)\n");
        let all = cli(&["hgetall", "cli-row"]);
        assert!(cli(&["hdel", "cli-row", "a"]).starts_with("OK "));
        (all, cli(&["hgetall", "cli-row"]))
    });
    let (all, after) = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, "a\t1\nb\t2\n");
    assert_eq!(after, "b\t2\n");

    let _ = stop_native.send(true);
    node.shutdown(false).await.unwrap();
    for task in [resp, http] {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("gateway stops with the node")
            .unwrap()
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), native)
        .await
        .expect("native server stops")
        .unwrap();
}
