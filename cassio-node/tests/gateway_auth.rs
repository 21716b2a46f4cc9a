//! Users, permissions and idle timeouts on the client ports, against a fake
//! node over loopback: RESP with the `redis` crate and raw frames, HTTP
//! Basic and Bearer with reqwest, the native client's handshake. (TLS with
//! `redis-cli --tls` and `curl --cacert` is in `client_tls_process.rs`.)

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use cassio_node::auth::{hash_secret, Access, Authenticator, ClientSecurity, User};
use cassio_node::client::{Client, ClientConfig, Credentials};
use cassio_node::gateway::GatewayLimits;
use cassio_node::RequestError;
use gateway_common::{spawn_fake, Served};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);

fn user(name: &str, password: &str, access: Access) -> User {
    User {
        name: name.into(),
        password_hash: Some(hash_secret(password).unwrap()),
        token_hash: None,
        access,
        keyspaces: BTreeMap::new(),
        admin: false,
    }
}

/// alice: read-write and admin, with a bearer token; reader: read-only;
/// narrow: read-write in general but read-only in keyspace `default`.
fn users() -> Vec<User> {
    static USERS: OnceLock<Vec<User>> = OnceLock::new();
    USERS
        .get_or_init(|| {
            let mut alice = user("alice", "alice-pw", Access::ReadWrite);
            alice.admin = true;
            alice.token_hash = Some(hash_secret("alice-token").unwrap());
            let reader = user("reader", "reader-pw", Access::ReadOnly);
            let mut narrow = user("narrow", "narrow-pw", Access::ReadWrite);
            narrow.keyspaces.insert("default".into(), Access::ReadOnly);
            vec![alice, reader, narrow]
        })
        .clone()
}

fn security() -> ClientSecurity {
    ClientSecurity {
        auth: Some(Authenticator::new(users())),
        tls: None,
    }
}

async fn serve_resp(handle: cassio_node::NodeHandle, limits: GatewayLimits) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::gateway::serve_resp_secured(
        listener,
        handle,
        rx,
        limits,
        security(),
    ));
    Served { addr, stop, task }
}

async fn serve_http(handle: cassio_node::NodeHandle, limits: GatewayLimits) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::gateway::serve_http_secured(
        listener,
        handle,
        rx,
        limits,
        security(),
    ));
    Served { addr, stop, task }
}

/// Runs blocking `redis` crate code off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(WAIT * 3, tokio::task::spawn_blocking(f))
        .await
        .unwrap()
        .unwrap()
}

fn redis_con(url: String) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(url)?;
    c.get_connection_with_timeout(WAIT)
}

fn err_text(e: redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
}

#[tokio::test]
async fn resp_auth_with_the_redis_crate() {
    let fake = spawn_fake();
    let served = serve_resp(fake.handle.clone(), GatewayLimits::default()).await;
    let addr = served.addr;
    let out = blocking(move || {
        let mut anon = redis_con(format!("redis://{addr}/")).unwrap();
        let noauth = redis::cmd("GET")
            .arg("k")
            .query::<Option<String>>(&mut anon)
            .unwrap_err();
        // Wrong password and unknown user: the same answer.
        let wrong = redis::cmd("AUTH")
            .arg("alice")
            .arg("nope")
            .query::<String>(&mut anon)
            .unwrap_err();
        let unknown = redis::cmd("AUTH")
            .arg("mallory")
            .arg("nope")
            .query::<String>(&mut anon)
            .unwrap_err();
        let still = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query::<String>(&mut anon)
            .unwrap_err();
        let ok: String = redis::cmd("AUTH")
            .arg("alice")
            .arg("alice-pw")
            .query(&mut anon)
            .unwrap();
        let set: String = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query(&mut anon)
            .unwrap();
        let got: String = redis::cmd("GET").arg("k").query(&mut anon).unwrap();
        // Credentials in the URL: the crate sends AUTH itself.
        let mut reader = redis_con(format!("redis://reader:reader-pw@{addr}/")).unwrap();
        let read: String = redis::cmd("GET").arg("k").query(&mut reader).unwrap();
        let ro = redis::cmd("SET")
            .arg("k")
            .arg("w")
            .query::<String>(&mut reader)
            .unwrap_err();
        let mut narrow = redis_con(format!("redis://narrow:narrow-pw@{addr}/")).unwrap();
        let ks = redis::cmd("DEL")
            .arg("k")
            .query::<i64>(&mut narrow)
            .unwrap_err();
        let bad_url = redis_con(format!("redis://alice:wrong@{addr}/")).map(|_| ());
        (
            err_text(noauth),
            err_text(wrong),
            err_text(unknown),
            err_text(still),
            ok,
            set,
            got,
            read,
            err_text(ro),
            err_text(ks),
            bad_url.map_err(err_text),
        )
    })
    .await;
    let (noauth, wrong, unknown, still, ok, set, got, read, ro, ks, bad_url) = out;
    assert!(noauth.starts_with("NOAUTH"), "{noauth}");
    assert!(wrong.starts_with("WRONGPASS"), "{wrong}");
    assert_eq!(
        wrong, unknown,
        "an unknown user must look like a wrong password"
    );
    assert!(still.starts_with("NOAUTH"), "{still}");
    assert_eq!((ok.as_str(), set.as_str(), got.as_str()), ("OK", "OK", "v"));
    assert_eq!(read, "v");
    assert!(
        ro.starts_with("NOPERM") && ro.contains("reader") && ro.contains("read-only"),
        "{ro}"
    );
    assert!(
        ks.starts_with("NOPERM") && ks.contains("keyspace 'default'") && ks.contains("narrow"),
        "{ks}"
    );
    assert!(bad_url.is_err(), "a wrong password in the URL must fail");
    // Only alice's SET reached the node; refused commands never did.
    let writes = fake
        .seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| matches!(r.op, cassio_core::ClientOp::Put { .. }))
        .count();
    assert_eq!(writes, 1);
    served.shutdown().await;
}

fn frame(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn resp_hello_3_auth_logs_in_and_switches_protocol() {
    let fake = spawn_fake();
    let served = serve_resp(fake.handle.clone(), GatewayLimits::default()).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(&frame(&["HELLO", "3"])).await.unwrap();
    let refused = read_some(&mut s).await;
    assert!(
        refused.starts_with("-NOAUTH HELLO must be called"),
        "{refused}"
    );
    s.write_all(&frame(&["HELLO", "3", "AUTH", "alice", "bad"]))
        .await
        .unwrap();
    let bad = read_some(&mut s).await;
    assert!(bad.starts_with("-WRONGPASS"), "{bad}");
    s.write_all(&frame(&[
        "HELLO", "3", "AUTH", "alice", "alice-pw", "SETNAME", "app",
    ]))
    .await
    .unwrap();
    let hello = read_some(&mut s).await;
    assert!(hello.starts_with("%7\r\n"), "RESP3 map expected: {hello}");
    // A pipeline after the login, and a GET of a missing key in RESP3.
    let mut batch = frame(&["SET", "a", "1"]);
    batch.extend(frame(&["GET", "missing"]));
    batch.extend(frame(&["CLIENT", "GETNAME"]));
    s.write_all(&batch).await.unwrap();
    let mut got = String::new();
    while got.matches("\r\n").count() < 4 {
        got.push_str(&read_some(&mut s).await);
    }
    assert_eq!(got, "+OK\r\n_\r\n$3\r\napp\r\n");
    served.shutdown().await;
}

#[tokio::test]
async fn resp_idle_connections_are_told_and_closed() {
    let fake = spawn_fake();
    let limits = GatewayLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..GatewayLimits::default()
    };
    let served = serve_resp(fake.handle.clone(), limits).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("-ERR idle timeout") && text.contains("idle_timeout"),
        "{text}"
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    // A busy connection is not idle: commands every 100 ms for a second.
    let mut busy = TcpStream::connect(served.addr).await.unwrap();
    for _ in 0..10 {
        busy.write_all(&frame(&["PING"])).await.unwrap();
        let r = read_some(&mut busy).await;
        assert!(r.starts_with("-NOAUTH"), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served.shutdown().await;
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

#[tokio::test]
async fn http_basic_and_bearer() {
    let fake = spawn_fake();
    let served = serve_http(fake.handle.clone(), GatewayLimits::default()).await;
    let base = format!("http://{}", served.addr);
    let c = http();
    // /health and /ready stay open (load balancers, readiness probes).
    let health = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_ne!(ready.status(), 401, "/ready is a probe: no credentials");
    let none = c.get(format!("{base}/kv/k")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let schemes: Vec<String> = none
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        schemes.iter().any(|s| s.starts_with("Basic"))
            && schemes.iter().any(|s| s.starts_with("Bearer")),
        "{schemes:?}"
    );
    let put = c
        .put(format!("{base}/kv/k"))
        .basic_auth("alice", Some("alice-pw"))
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let get = c
        .get(format!("{base}/kv/k"))
        .bearer_auth("alice:alice-token")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().await.unwrap(), "v1");
    // Wrong password, unknown user, the password used as a token: 401 with
    // one body, so nothing tells which users exist.
    let mut bodies = Vec::new();
    for req in [
        c.get(format!("{base}/kv/k"))
            .basic_auth("alice", Some("bad")),
        c.get(format!("{base}/kv/k"))
            .basic_auth("mallory", Some("bad")),
        c.get(format!("{base}/kv/k")).bearer_auth("alice:alice-pw"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        bodies.push(r.text().await.unwrap());
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
    assert!(bodies[0].contains("unauthorized"), "{}", bodies[0]);
    // The read-only user reads but may not write; narrow may not write
    // keyspace default; only admins reach /admin.
    let read = c
        .get(format!("{base}/kv/k"))
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    for (who, pw) in [("reader", "reader-pw"), ("narrow", "narrow-pw")] {
        let w = c
            .delete(format!("{base}/kv/k"))
            .basic_auth(who, Some(pw))
            .send()
            .await
            .unwrap();
        assert_eq!(w.status(), 403, "{who}");
        let body = w.text().await.unwrap();
        assert!(
            body.contains("forbidden") && body.contains("keyspace 'default'"),
            "{body}"
        );
        // An increment writes: the same refusal.
        let w = c
            .post(format!("{base}/incr/k"))
            .basic_auth(who, Some(pw))
            .send()
            .await
            .unwrap();
        assert_eq!(w.status(), 403, "incr by {who}");
    }
    let admin = c
        .post(format!("{base}/admin/repair"))
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403);
    let admin = c
        .post(format!("{base}/admin/repair"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 202);
    // Refused requests never reached the node: one put, two gets (alice's
    // and the reader's).
    let seen = fake.seen.lock().unwrap().requests.len();
    assert_eq!(seen, 3);
    // Failed logins are counted.
    let metrics = c
        .get(format!("{base}/metrics"))
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cassio_auth_failures_total{protocol=\"http\"}")),
        "{metrics}"
    );
    served.shutdown().await;
}

#[tokio::test]
async fn http_idle_connections_are_closed_and_counted() {
    let fake = spawn_fake();
    let limits = GatewayLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..GatewayLimits::default()
    };
    let served = serve_http(fake.handle.clone(), limits).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert!(got.is_empty(), "{got:?}");
    let metrics = http()
        .get(format!("http://{}/metrics", served.addr))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cassio_gateway_idle_closes_total{protocol=\"http\"}")),
        "{metrics}"
    );
    // A request that takes longer than the idle timeout is not silence:
    // its answer comes.
    let slow = http()
        .get(format!("http://{}/kv/slow-key", served.addr))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("a slow request was cut off by the idle timeout");
    assert_eq!(slow.status(), 404);
    served.shutdown().await;
}

/// A native client port for the fake node with `security`.
async fn serve_native(
    handle: cassio_node::NodeHandle,
    limits: GatewayLimits,
) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::server::serve_client_secured(
        listener,
        handle,
        rx,
        limits,
        security(),
    ));
    (addr, stop, task)
}

fn native_config(user: Option<(&str, &str)>) -> ClientConfig {
    ClientConfig {
        request_timeout: WAIT,
        credentials: user.map(|(u, p)| Credentials {
            user: u.into(),
            password: p.into(),
        }),
        ..ClientConfig::default()
    }
}

fn unauthorized(e: &cassio_node::client::Error) -> Option<&str> {
    match e {
        cassio_node::client::Error::Request(RequestError::Unauthorized(m)) => Some(m),
        _ => None,
    }
}

#[tokio::test]
async fn native_handshake_permissions_and_idle_reconnect() {
    let fake = spawn_fake();
    let limits = GatewayLimits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..GatewayLimits::default()
    };
    let (addr, stop, task) = serve_native(fake.handle.clone(), limits).await;
    // No credentials: Ping (the connect check) works, data does not.
    let anon = Client::connect_with(&[addr], native_config(None))
        .await
        .unwrap();
    let e = anon.get("k", None).await.unwrap_err();
    assert!(
        unauthorized(&e).is_some_and(|m| m.contains("authentication required")),
        "{e}"
    );
    // Wrong password and unknown user: one message.
    let wrong = Client::connect_with(&[addr], native_config(Some(("alice", "bad"))))
        .await
        .unwrap_err();
    let unknown = Client::connect_with(&[addr], native_config(Some(("mallory", "bad"))))
        .await
        .unwrap_err();
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert!(unauthorized(&wrong).is_some(), "{wrong}");
    let alice = Client::connect_with(&[addr], native_config(Some(("alice", "alice-pw"))))
        .await
        .unwrap();
    alice.set("k", "v", None).await.unwrap();
    assert_eq!(
        alice.get("k", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let reader = Client::connect_with(&[addr], native_config(Some(("reader", "reader-pw"))))
        .await
        .unwrap();
    assert_eq!(
        reader.get("k", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let e = reader.set("k", "w", None).await.unwrap_err();
    assert!(
        unauthorized(&e).is_some_and(|m| m.contains("may not write keyspace 'default'")),
        "{e}"
    );
    // Compare-and-set and increments write too.
    let e = reader.incr("k", 1).await.unwrap_err();
    assert!(
        unauthorized(&e).is_some_and(|m| m.contains("may not write keyspace 'default'")),
        "{e}"
    );
    let e = reader.cas("k", None, "w").await.unwrap_err();
    assert!(
        unauthorized(&e).is_some_and(|m| m.contains("may not write keyspace 'default'")),
        "{e}"
    );
    // The node closes alice's idle connection; her next call reconnects
    // (and logs in again) without an error.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        alice.get("k", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let _ = stop.send(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn resp_without_users_refuses_auth_and_serves_everyone() {
    let fake = spawn_fake();
    let served = gateway_common::serve_resp(fake.handle.clone()).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(&frame(&["AUTH", "alice", "pw"])).await.unwrap();
    let r = read_some(&mut s).await;
    assert!(r.contains("no users configured"), "{r}");
    s.write_all(&frame(&["SET", "k", "v"])).await.unwrap();
    assert_eq!(read_some(&mut s).await, "+OK\r\n");
    served.shutdown().await;
}

/// A development CA and a client-port certificate in `dir`: the acceptor
/// for the gateways and a connector trusting the CA.
fn tls_pair(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    use cassio_transport_tcp::tls::{generate_cert_without_node_id, generate_dev_ca, read_certs};
    let ca = generate_dev_ca(dir, "test").unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = generate_cert_without_node_id(&ca, dir, "client", &names).unwrap();
    let acceptor = cassio_node::auth::tls_acceptor(&cert.cert, &cert.key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&ca.cert).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(cassio_transport_tcp::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        acceptor,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
    )
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap()
}

async fn tls_read_to_end(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut got = Vec::new();
    // A close without close_notify is an error; what arrived still counts.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn max_clients_over_tls_is_answered_in_tls_on_every_port() {
    let tmp = tempfile::tempdir().unwrap();
    let (acceptor, connector) = tls_pair(tmp.path());
    let security = ClientSecurity {
        auth: Some(Authenticator::new(users())),
        tls: Some(acceptor),
    };
    let limits = GatewayLimits {
        max_connections: 1,
        ..GatewayLimits::default()
    };
    let fake = spawn_fake();
    let mut stops = Vec::new();
    let mut addrs = Vec::new();
    for port in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let (stop, rx) = watch::channel(false);
        let (h, sec) = (fake.handle.clone(), security.clone());
        let task = tokio::spawn(async move {
            match port {
                0 => cassio_node::gateway::serve_resp_secured(listener, h, rx, limits, sec)
                    .await
                    .unwrap(),
                1 => cassio_node::gateway::serve_http_secured(listener, h, rx, limits, sec)
                    .await
                    .unwrap(),
                _ => cassio_node::server::serve_client_secured(listener, h, rx, limits, sec).await,
            }
        });
        stops.push((stop, task));
    }
    let (resp, http, native) = (addrs[0], addrs[1], addrs[2]);

    // RESP: the first client logs in over TLS; the second is told, in TLS.
    let mut first = tls_connect(&connector, resp).await;
    first
        .write_all(&frame(&["AUTH", "alice", "alice-pw"]))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, first.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    let mut second = tls_connect(&connector, resp).await;
    assert_eq!(
        tls_read_to_end(&mut second).await,
        "-ERR max number of clients reached\r\n"
    );

    // HTTP: one connection held open, the next answered 503.
    let _held = tls_connect(&connector, http).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = tls_connect(&connector, http).await;
    let text = tls_read_to_end(&mut refused).await;
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections"),
        "{text}"
    );

    // Native: the Rust client over TLS; a second one is refused Overloaded.
    let tls = cassio_node::client::ClientTls::from_ca_file(&tmp.path().join("ca.pem"), "127.0.0.1")
        .unwrap();
    let cfg = ClientConfig {
        tls: Some(tls),
        ..native_config(Some(("alice", "alice-pw")))
    };
    let one = Client::connect_with(&[native], cfg.clone()).await.unwrap();
    one.set("k", "v", None).await.unwrap();
    let e = Client::connect_with(&[native], cfg).await.unwrap_err();
    assert!(
        matches!(e.client_error(), Some(cassio_core::ClientError::Overloaded)),
        "{e}"
    );
    assert_eq!(
        one.get("k", None).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    for (stop, task) in stops {
        let _ = stop.send(true);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
}
