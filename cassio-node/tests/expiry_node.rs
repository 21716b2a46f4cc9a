//! Expiry end to end on a real single node (native store in a temp dir,
//! TCP transport, RF=1): every RESP expiry and conditional-write command
//! through the Rust `redis` crate, `?ttl=` and `Cassio-TTL` over HTTP, and
//! the native client's `set_with_ttl`, each with an expiry actually
//! passing (short TTLs, bounded polling).

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use cassio_node::builder::NodeBuilder;
use cassio_node::RunningNode;
use cassio_store_native::NativeStore;
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

async fn single_node(dir: &std::path::Path) -> RunningNode {
    let transport = TcpTransport::bind("127.0.0.1:0".parse().unwrap(), TcpConfig::plaintext("ttl"))
        .await
        .unwrap();
    let store = NativeStore::open(dir, Default::default()).unwrap();
    NodeBuilder::new(1, "ttl")
        .transport(Arc::new(transport))
        .store(Arc::new(store))
        .replication_factor(1)
        .start()
        .await
        .unwrap()
}

/// Polls `f` every 50 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn resp_checks(addr: SocketAddr) {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let c = &mut c;
    let int = |c: &mut redis::Connection, a: &[&str]| q::<i64>(c, a).unwrap();
    let get = |c: &mut redis::Connection, k: &str| q::<Option<String>>(c, &["GET", k]).unwrap();
    let err =
        |c: &mut redis::Connection, a: &[&str]| q::<redis::Value>(c, a).unwrap_err().to_string();

    // TTL / PTTL: -2 missing, -1 without expiry.
    assert_eq!(int(c, &["TTL", "nothing"]), -2);
    assert_eq!(int(c, &["PTTL", "nothing"]), -2);
    assert_eq!(q::<String>(c, &["SET", "plain", "v"]).unwrap(), "OK");
    assert_eq!(int(c, &["TTL", "plain"]), -1);

    // SET ... EX: visible, a TTL counting down, then gone.
    assert_eq!(
        q::<String>(c, &["SET", "ex", "v", "EX", "1"]).unwrap(),
        "OK"
    );
    assert_eq!(get(c, "ex").as_deref(), Some("v"));
    let pttl = int(c, &["PTTL", "ex"]);
    assert!((1..=1000).contains(&pttl), "PTTL {pttl}");
    assert!((0..=1).contains(&int(c, &["TTL", "ex"])));
    eventually(Duration::from_secs(5), "SET EX 1 expires", || {
        get(c, "ex").is_none()
    });
    assert_eq!(int(c, &["TTL", "ex"]), -2);
    assert_eq!(int(c, &["EXISTS", "ex"]), 0);

    // PX, EXAT, PXAT.
    assert_eq!(
        q::<String>(c, &["SET", "px", "v", "PX", "300"]).unwrap(),
        "OK"
    );
    let future = (unix_secs() + 100).to_string();
    assert_eq!(
        q::<String>(c, &["SET", "exat", "v", "EXAT", &future]).unwrap(),
        "OK"
    );
    let t = int(c, &["TTL", "exat"]);
    assert!((98..=100).contains(&t), "TTL after EXAT {t}");
    let past_ms = ((unix_secs() - 10) * 1000).to_string();
    assert_eq!(
        q::<String>(c, &["SET", "pxat", "v", "PXAT", &past_ms]).unwrap(),
        "OK"
    );
    assert_eq!(get(c, "pxat"), None, "PXAT in the past: already expired");
    eventually(Duration::from_secs(5), "SET PX 300 expires", || {
        get(c, "px").is_none()
    });

    // KEEPTTL keeps the deadline; a plain SET drops it.
    q::<String>(c, &["SET", "keep", "a", "EX", "100"]).unwrap();
    q::<String>(c, &["SET", "keep", "b", "KEEPTTL"]).unwrap();
    assert_eq!(get(c, "keep").as_deref(), Some("b"));
    assert!(int(c, &["TTL", "keep"]) > 90);
    q::<String>(c, &["SET", "keep", "c"]).unwrap();
    assert_eq!(int(c, &["TTL", "keep"]), -1);

    // NX / XX / GET.
    assert_eq!(
        q::<Option<String>>(c, &["SET", "nx", "1", "NX"])
            .unwrap()
            .as_deref(),
        Some("OK")
    );
    assert_eq!(
        q::<Option<String>>(c, &["SET", "nx", "2", "NX"]).unwrap(),
        None
    );
    assert_eq!(get(c, "nx").as_deref(), Some("1"));
    assert_eq!(
        q::<Option<String>>(c, &["SET", "xx", "1", "XX"]).unwrap(),
        None
    );
    assert_eq!(get(c, "xx"), None);
    assert_eq!(
        q::<Option<String>>(c, &["SET", "nx", "3", "XX"])
            .unwrap()
            .as_deref(),
        Some("OK")
    );
    assert_eq!(
        q::<Option<String>>(c, &["SET", "nx", "4", "GET"])
            .unwrap()
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        q::<Option<String>>(c, &["SET", "fresh", "1", "GET"]).unwrap(),
        None
    );
    assert_eq!(get(c, "nx").as_deref(), Some("4"));

    // SETNX, SETEX, PSETEX.
    assert_eq!(int(c, &["SETNX", "snx", "1"]), 1);
    assert_eq!(int(c, &["SETNX", "snx", "2"]), 0);
    assert_eq!(get(c, "snx").as_deref(), Some("1"));
    assert_eq!(q::<String>(c, &["SETEX", "sx", "100", "v"]).unwrap(), "OK");
    assert!(int(c, &["TTL", "sx"]) > 90);
    assert_eq!(
        q::<String>(c, &["PSETEX", "psx", "300", "v"]).unwrap(),
        "OK"
    );
    eventually(Duration::from_secs(5), "PSETEX 300 expires", || {
        get(c, "psx").is_none()
    });

    // EXPIRE family and PERSIST.
    assert_eq!(int(c, &["EXPIRE", "missing", "10"]), 0);
    q::<String>(c, &["SET", "e", "v"]).unwrap();
    assert_eq!(int(c, &["EXPIRE", "e", "100", "XX"]), 0, "XX: no TTL yet");
    assert_eq!(int(c, &["EXPIRE", "e", "100", "NX"]), 1);
    assert_eq!(int(c, &["EXPIRE", "e", "50", "GT"]), 0);
    assert_eq!(int(c, &["EXPIRE", "e", "50", "LT"]), 1);
    let t = int(c, &["TTL", "e"]);
    assert!((48..=50).contains(&t), "TTL after EXPIRE LT {t}");
    assert_eq!(int(c, &["PERSIST", "e"]), 1);
    assert_eq!(int(c, &["PERSIST", "e"]), 0);
    assert_eq!(int(c, &["TTL", "e"]), -1);
    assert_eq!(
        get(c, "e").as_deref(),
        Some("v"),
        "EXPIRE/PERSIST keep the value"
    );
    assert_eq!(int(c, &["PEXPIRE", "e", "300"]), 1);
    eventually(Duration::from_secs(5), "PEXPIRE 300 expires", || {
        get(c, "e").is_none()
    });
    q::<String>(c, &["SET", "at", "v"]).unwrap();
    let at = (unix_secs() + 200).to_string();
    assert_eq!(int(c, &["EXPIREAT", "at", &at]), 1);
    assert!(int(c, &["TTL", "at"]) > 190);
    let pat = ((unix_secs() + 300) * 1000).to_string();
    assert_eq!(int(c, &["PEXPIREAT", "at", &pat]), 1);
    assert!(int(c, &["PTTL", "at"]) > 290_000);
    assert_eq!(int(c, &["EXPIRE", "at", "-1"]), 1, "a past time deletes");
    assert_eq!(get(c, "at"), None);
    assert_eq!(int(c, &["TTL", "at"]), -2);

    // GETEX and GETDEL.
    q::<String>(c, &["SET", "gx", "v"]).unwrap();
    assert_eq!(
        q::<Option<String>>(c, &["GETEX", "gx"]).unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(int(c, &["TTL", "gx"]), -1);
    assert_eq!(
        q::<Option<String>>(c, &["GETEX", "gx", "EX", "100"])
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert!(int(c, &["TTL", "gx"]) > 90);
    q::<Option<String>>(c, &["GETEX", "gx", "PERSIST"]).unwrap();
    assert_eq!(int(c, &["TTL", "gx"]), -1);
    q::<Option<String>>(c, &["GETEX", "gx", "PX", "300"]).unwrap();
    eventually(Duration::from_secs(5), "GETEX PX 300 expires", || {
        get(c, "gx").is_none()
    });
    assert_eq!(q::<Option<String>>(c, &["GETEX", "gx"]).unwrap(), None);
    q::<String>(c, &["SET", "gd", "v"]).unwrap();
    assert_eq!(
        q::<Option<String>>(c, &["GETDEL", "gd"])
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_eq!(q::<Option<String>>(c, &["GETDEL", "gd"]).unwrap(), None);
    assert_eq!(get(c, "gd"), None);

    // Redis's errors, and the connection lives on.
    for (args, want) in [
        (
            &["SET", "k", "v", "EX", "x"][..],
            "value is not an integer or out of range",
        ),
        (
            &["SET", "k", "v", "EX", "0"],
            "invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "PX", "-1"],
            "invalid expire time in 'set' command",
        ),
        (&["SET", "k", "v", "EX", "1", "KEEPTTL"], "syntax error"),
        (
            &["SETEX", "k", "0", "v"],
            "invalid expire time in 'setex' command",
        ),
        (
            &["PSETEX", "k", "-5", "v"],
            "invalid expire time in 'psetex' command",
        ),
        (
            &["EXPIRE", "k", "soon"],
            "value is not an integer or out of range",
        ),
        (
            &["GETEX", "k", "EX", "0"],
            "invalid expire time in 'getex' command",
        ),
        (&["TTL"], "wrong number of arguments for 'ttl' command"),
    ] {
        let e = err(c, args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert_eq!(q::<String>(c, &["PING"]).unwrap(), "PONG");
    // COMMAND knows them.
    let info: redis::Value = q(c, &["COMMAND", "INFO", "expire", "ttl", "getex"]).unwrap();
    let redis::Value::Array(items) = info else {
        panic!("COMMAND INFO: {info:?}");
    };
    assert!(
        items.iter().all(|i| !matches!(i, redis::Value::Nil)),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_over_resp_http_and_the_native_client() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    let resp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (resp_addr, http_addr, native_addr) = (
        resp_l.local_addr().unwrap(),
        http_l.local_addr().unwrap(),
        native_l.local_addr().unwrap(),
    );
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
    let native = tokio::spawn(cassio_node::server::serve_client(
        native_l,
        node.handle(),
        node.shutdown_signal(),
    ));

    tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || resp_checks(resp_addr)),
    )
    .await
    .unwrap()
    .unwrap();

    // HTTP: ?ttl= on PUT and POST, Cassio-TTL on GET, 404 once expired.
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{http_addr}");
    let r = c
        .put(format!("{base}/kv/h?ttl=100"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{base}/kv/h")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ttl: u64 = r.headers()["cassio-ttl"].to_str().unwrap().parse().unwrap();
    assert!((99..=100).contains(&ttl), "Cassio-TTL {ttl}");
    let r = c
        .post(format!("{base}/ks/default/kv/short?ttl=1"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{base}/kv/forever"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{base}/kv/forever")).send().await.unwrap();
    assert!(r.headers().get("cassio-ttl").is_none(), "no TTL, no header");
    for bad in ["0", "-3", "1.5", "x"] {
        let r = c
            .put(format!("{base}/kv/h?ttl={bad}"))
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "ttl={bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_ttl", "{body}");
    }
    let start = Instant::now();
    loop {
        let r = c.get(format!("{base}/kv/short")).send().await.unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "?ttl=1 never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The native client.
    let client = cassio_node::client::Client::connect(&[native_addr])
        .await
        .unwrap();
    client
        .set_with_ttl("n", "v", Duration::from_millis(300), None)
        .await
        .unwrap();
    assert_eq!(
        client.get("n", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let start = Instant::now();
    while client.get("n", None).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "set_with_ttl never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client
        .set_with_ttl("n", "v", Duration::ZERO, None)
        .await
        .is_err());

    // The CLI: `cassio set k v --ttl 1s`, then `cassio get` until (nil).
    let addr = native_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let cassio = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cassio"))
                .args(args)
                .args(["--node", &addr])
                .env_remove("CASSIO_USER")
                .env_remove("CASSIO_TLS_CA")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        };
        let (ok, out, err) = cassio(&["set", "cli", "v", "--ttl", "1s"]);
        assert!(ok && out.starts_with("OK "), "{out} {err}");
        assert_eq!(cassio(&["get", "cli"]).1, "v\n");
        eventually(
            Duration::from_secs(6),
            "cassio set --ttl 1s expires",
            || cassio(&["get", "cli"]).1 == "(nil)\n",
        );
        let (ok, _, err) = cassio(&["set", "cli", "v", "--ttl", "0s"]);
        assert!(!ok && err.contains("more than zero"), "{err}");
    })
    .await
    .unwrap();

    node.shutdown(false).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), resp).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), http).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), native).await;
}
