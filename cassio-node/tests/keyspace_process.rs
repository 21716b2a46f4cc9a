//! Keyspaces on real processes: three nodes (RF 3) agree on a schema;
//! `cassio keyspace create/alter/list/drop` and the HTTP admin API change
//! it; HTTP (`/ks/{keyspace}/kv/{key}`) and RESP (`CASSIO.KEYSPACE`)
//! address a keyspace, and so does the Rust client, which also creates,
//! alters, lists and drops one; a keyspace dropped and created again starts empty;
//! a node that starts later takes the cluster's keyspaces over its own
//! `--replication-factor`.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{cli, http, node_args, start_node, start_three, wait_status, Scenario};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `cassio keyspace ARGS --node HTTP`, asserting it succeeded.
fn keyspace_cli(http: SocketAddr, args: &[&str]) -> String {
    let node = http.to_string();
    let mut all = vec!["keyspace"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--node", &node]);
    let out = cli(&all);
    assert!(
        out.status.success(),
        "cassio {all:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Retries a request while the node answers "later" (503: a node that
/// has not fetched the newest schema yet, say), for a bounded time.
fn http_settled(at: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, text) = http(at, method, path, body);
        if code != 503 || Instant::now() > deadline {
            return (code, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One RESP command over a raw socket (RESP2 array of bulk strings);
/// returns the first reply line.
fn resp(conn: &mut std::net::TcpStream, args: &[&str]) -> String {
    use std::io::{BufRead, Read, Write};
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(req.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().unwrap();
        if len < 0 {
            return "(nil)".into();
        }
        let mut body = vec![0u8; len as usize + 2];
        reader.read_exact(&mut body).unwrap();
        return String::from_utf8_lossy(&body[..len as usize]).into_owned();
    }
    line.trim_end().to_string()
}

#[test]
fn keyspaces_are_created_used_altered_dropped_and_reused_empty() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Scenario {
        name: "keyspaces",
        transport: "tcp",
        store: "native",
    };
    let mut nodes = start_three(&sc, dir.path(), |_, _| {});
    let h: Vec<SocketAddr> = nodes.iter().map(|(_, r)| r.http.unwrap()).collect();
    // The cluster founded its schema (version 1, all three voting).
    for (_, r) in &nodes {
        wait_status("an agreed schema", r.client, Duration::from_secs(30), |s| {
            s.schema_version >= 1
        });
    }

    // Create from the CLI on node 1; list from node 3.
    let out = keyspace_cli(h[0], &["create", "orders", "--rf", "3"]);
    assert!(out.contains("created keyspace orders"), "{out}");
    let listed = keyspace_cli(h[2], &["list"]);
    assert!(
        listed.contains("orders") && listed.contains("default"),
        "{listed}"
    );

    // A chain-replicated keyspace from the CLI; the listing shows each
    // keyspace's mode. Datacenter factors are refused with --mode craq
    // before anything is sent.
    let out = keyspace_cli(h[0], &["create", "locks", "--rf", "3", "--mode", "craq"]);
    assert!(out.contains("created keyspace locks"), "{out}");
    let listed = keyspace_cli(h[1], &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("locks") && l.contains(" craq ")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("orders") && l.contains(" lww ")),
        "{listed}"
    );
    let node0 = h[0].to_string();
    let failed = cli(&[
        "keyspace", "create", "m", "--rf", "dc1:1", "--mode", "craq", "--node", &node0,
    ]);
    assert!(!failed.status.success());
    assert!(
        text(&failed.stderr).contains("--mode craq"),
        "{}",
        text(&failed.stderr)
    );

    // Refusals: an existing name (409), a bad name (400), a factor that
    // jumps by two (400), an unknown keyspace for data (400).
    let (code, body) = http(
        h[1],
        "POST",
        "/admin/keyspaces",
        r#"{"name":"orders","replication_factor":3}"#,
    );
    assert_eq!(code, 409, "{body}");
    let (code, body) = http(
        h[1],
        "POST",
        "/admin/keyspaces",
        r##"{"name":"#1","replication_factor":3}"##,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(
        h[1],
        "PATCH",
        "/admin/keyspaces/orders",
        r#"{"replication_factor":1}"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(h[0], "GET", "/ks/nosuch/kv/k", "");
    assert_eq!(code, 400, "{body}");
    let failed = cli(&["keyspace", "drop", "nosuch", "--node", &h[0].to_string()]);
    assert!(!failed.status.success());
    assert!(
        text(&failed.stderr).contains("does not exist"),
        "{}",
        text(&failed.stderr)
    );

    // Data in `orders` over HTTP on one node, read on another; the same
    // key in `default` is another key.
    let (code, body) = http_settled(
        h[0],
        "PUT",
        "/ks/orders/kv/k1?consistency=quorum",
        "in-orders",
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_settled(h[2], "GET", "/ks/orders/kv/k1?consistency=quorum", "");
    assert_eq!((code, body.as_str()), (200, "in-orders"));
    assert_eq!(http(h[1], "GET", "/kv/k1?consistency=quorum", "").0, 404);

    // RESP: the connection's keyspace.
    let mut r = std::net::TcpStream::connect(nodes[1].1.resp.unwrap()).unwrap();
    r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(resp(&mut r, &["GET", "k1"]), "(nil)");
    assert_eq!(resp(&mut r, &["CASSIO.KEYSPACE", "orders"]), "+OK");
    assert_eq!(resp(&mut r, &["GET", "k1"]), "in-orders");
    assert_eq!(resp(&mut r, &["SET", "k2", "from-resp"]), "+OK");
    let (code, body) = http(h[0], "GET", "/ks/orders/kv/k2?consistency=quorum", "");
    assert_eq!((code, body.as_str()), (200, "from-resp"));

    // Alter by one step over HTTP; the listing shows it.
    let (code, body) = http(
        h[2],
        "PATCH",
        "/admin/keyspaces/orders",
        r#"{"consistency":"all"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let listed = keyspace_cli(h[0], &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("orders") && l.contains("ALL")),
        "{listed}"
    );

    // A factor step, then another at once: the second waits until every
    // replica was repaired under the first (the next round is minutes
    // away), and says so.
    let (code, body) = http(
        h[2],
        "PATCH",
        "/admin/keyspaces/orders",
        r#"{"replication_factor":2}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        h[1],
        "PATCH",
        "/admin/keyspaces/orders",
        r#"{"replication_factor":3}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("repair_pending"), "{body}");
    let failed = cli(&[
        "keyspace",
        "alter",
        "orders",
        "--rf",
        "3",
        "--node",
        &h[0].to_string(),
    ]);
    assert!(!failed.status.success());
    assert!(
        text(&failed.stderr).contains("anti-entropy round"),
        "{}",
        text(&failed.stderr)
    );

    // Drop, then create again: the new keyspace is empty.
    let out = keyspace_cli(h[1], &["drop", "orders"]);
    assert!(out.contains("dropped keyspace orders"), "{out}");
    let (code, _) = http_settled(h[0], "GET", "/ks/orders/kv/k1", "");
    assert_eq!(code, 400, "a dropped keyspace is unknown");
    keyspace_cli(h[2], &["create", "orders", "--rf", "3"]);
    let (code, body) = http_settled(h[0], "GET", "/ks/orders/kv/k1?consistency=quorum", "");
    assert_eq!(code, 404, "a re-created keyspace showed an old key: {body}");

    // The Rust client against the processes: create, address, alter, list
    // and drop a keyspace; its data stays apart from `default`'s.
    let c0 = nodes[0].1.client;
    let c2 = nodes[2].1.client;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use cassio_core::Consistency;
        use cassio_node::client::Client;
        let a = Client::connect(&[c0]).await.unwrap();
        let b = Client::connect(&[c2]).await.unwrap();
        a.create_keyspace("carts", 3, Some(Consistency::Quorum))
            .await
            .unwrap();
        let e = a.create_keyspace("carts", 3, None).await.unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        // Node 3 may learn the new version a moment later.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed = b.list_keyspaces().await.unwrap();
            if listed.keyspaces.iter().any(|k| k.name == "carts") {
                break;
            }
            assert!(Instant::now() < deadline, "{listed:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        a.keyspace("carts")
            .set("k1", "in-carts", Some(Consistency::Quorum))
            .await
            .unwrap();
        let got = b
            .keyspace("carts")
            .get("k1", Some(Consistency::Quorum))
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(&b"in-carts"[..]));
        let in_orders = b
            .keyspace("orders")
            .get("k1", Some(Consistency::Quorum))
            .await
            .unwrap();
        assert_eq!(in_orders, None, "a re-created keyspace showed an old key");
        b.alter_keyspace("carts", None, Some(Consistency::All))
            .await
            .unwrap();
        a.drop_keyspace("carts").await.unwrap();
        let e = a.keyspace("carts").get("k1", None).await.unwrap_err();
        assert!(e.is_unknown_keyspace(), "{e}");
    });

    // A fourth node started with another replication factor takes the
    // cluster's keyspaces.
    let mut args = node_args(&sc, dir.path(), 4, Some(nodes[0].1.peer), None);
    if let Some(i) = args.iter().position(|a| a == "--replication-factor") {
        args[i + 1] = "1".into();
    } else {
        args.extend(["--replication-factor".into(), "1".into()]);
    }
    let (mut p4, r4) = start_node("node4", dir.path(), &args);
    let st = wait_status(
        "node 4 with the cluster's schema",
        r4.client,
        Duration::from_secs(60),
        |s| s.keyspaces.iter().any(|k| k.name == "orders"),
    );
    let default_rf = st
        .keyspaces
        .iter()
        .find(|k| k.name == "default")
        .map(|k| k.replication_factor);
    assert_eq!(default_rf, Some(3), "node 4 kept its own factor: {st:#?}");

    p4.terminate();
    for (p, _) in &mut nodes {
        p.terminate();
    }
}
