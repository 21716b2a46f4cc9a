//! The RESP gateway against a fake node: the `redis` crate, `redis-cli`,
//! `redis-benchmark`, raw sockets for garbage, pipelining and shutdown.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use bytes::Bytes;
use cassio_core::{ClientOp, ClientResponse, Consistency};
use cassio_node::handle::Command;
use cassio_node::NodeHandle;
use gateway_common::{dead_handle, serve_resp, spawn_fake};
use redis::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// Runs blocking client code off the runtime, bounded by [`WAIT`].
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(f))
        .await
        .expect("client finished in time")
        .expect("client did not panic")
}

fn connect(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    con
}

fn q<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the peer closes the connection (or the read timeout fails the test).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("server closes the connection");
    out
}

/// Reads until `out` ends with `suffix`.
fn read_until(s: &mut TcpStream, suffix: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(suffix) {
        let n = s.read(&mut buf).expect("reply arrives");
        assert!(
            n > 0,
            "connection closed early; got {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_speaks_every_supported_command() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        assert_eq!(q::<String>(&mut c, &["PING"]).unwrap(), "PONG");
        assert_eq!(q::<String>(&mut c, &["PING", "hi"]).unwrap(), "hi");
        assert_eq!(
            q::<String>(&mut c, &["ECHO", "hello world"]).unwrap(),
            "hello world"
        );
        assert_eq!(q::<String>(&mut c, &["SELECT", "0"]).unwrap(), "OK");
        assert!(q::<String>(&mut c, &["SELECT", "1"]).is_err());

        assert_eq!(
            q::<String>(&mut c, &["SET", "user1", "{\"name\": \"Jack\"}"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["GET", "user1"])
                .unwrap()
                .as_deref(),
            Some("{\"name\": \"Jack\"}")
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["GET", "nobody"]).unwrap(),
            None
        );
        // Binary-safe values, empty values, and an empty key.
        let bin: Vec<u8> = (0..=255u8).collect();
        let _: () = redis::cmd("SET")
            .arg(b"bin\x00key")
            .arg(&bin)
            .query(&mut c)
            .unwrap();
        let got: Vec<u8> = redis::cmd("GET").arg(b"bin\x00key").query(&mut c).unwrap();
        assert_eq!(got, bin);
        assert_eq!(q::<String>(&mut c, &["SET", "", ""]).unwrap(), "OK");
        assert_eq!(
            q::<Option<String>>(&mut c, &["GET", ""])
                .unwrap()
                .as_deref(),
            Some("")
        );

        assert_eq!(
            q::<String>(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "nope", "c", "b"]).unwrap(),
            vec![Some("1".into()), None, Some("3".into()), Some("2".into())]
        );
        assert_eq!(
            q::<i64>(&mut c, &["EXISTS", "a", "b", "nope", "a"]).unwrap(),
            3
        );
        assert_eq!(
            q::<i64>(&mut c, &["DEL", "a", "nope", "b", "a"]).unwrap(),
            2
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "b", "c"]).unwrap(), 1);
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "a"]).unwrap(), None);

        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETNAME", "tester"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
            "tester"
        );
        assert!(q::<i64>(&mut c, &["CLIENT", "ID"]).unwrap() > 0);
        let err = q::<String>(&mut c, &["CLIENT", "KILL", "x"]).unwrap_err();
        assert!(
            err.to_string().contains("CLIENT KILL is not supported"),
            "{err}"
        );

        let hello: Value = q(&mut c, &["HELLO", "2"]).unwrap();
        let Value::Array(items) = hello else {
            panic!("HELLO answers an array: {hello:?}")
        };
        assert!(items.contains(&Value::BulkString(b"proto".to_vec())));
        assert!(items.contains(&Value::Int(2)));
        let err = q::<Value>(&mut c, &["HELLO", "4"]).unwrap_err();
        assert!(
            err.to_string().contains("unsupported protocol version"),
            "{err}"
        );

        let info: String = q(&mut c, &["INFO"]).unwrap();
        assert!(info.contains("redis_version:"), "{info}");
        assert!(info.contains("cluster_name:test"), "{info}");
        assert!(
            info.contains("member_1:addr=127.0.0.1:7000,state=Normal"),
            "{info}"
        );
        let server_only: String = q(&mut c, &["INFO", "server"]).unwrap();
        assert!(!server_only.contains("cluster_name"));

        let count: i64 = q(&mut c, &["COMMAND", "COUNT"]).unwrap();
        let all: Vec<Value> = q(&mut c, &["COMMAND"]).unwrap();
        assert_eq!(all.len() as i64, count);
        let info: Vec<Value> = q(&mut c, &["COMMAND", "INFO", "get", "nosuch"]).unwrap();
        assert_eq!(info[1], Value::Nil);
        let Value::Array(get) = &info[0] else {
            panic!("COMMAND INFO get: {info:?}")
        };
        assert_eq!(get[0], Value::BulkString(b"get".to_vec()));
        assert_eq!(get[1], Value::Int(2));

        let cfg: Vec<String> = q(&mut c, &["CONFIG", "GET", "appendonly"]).unwrap();
        assert_eq!(cfg, vec!["appendonly".to_string(), "no".into()]);
        assert_eq!(q::<String>(&mut c, &["QUIT"]).unwrap(), "OK");
    })
    .await;
    let data = fake.data.lock().unwrap().clone();
    assert_eq!(
        data.get(&Bytes::from_static(b"c")),
        Some(&Bytes::from_static(b"3"))
    );
    assert!(!data.contains_key(&Bytes::from_static(b"a")));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_commands_get_errors_naming_them_and_the_connection_lives() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        // SET options exist now (resp_expiry.rs); an unknown one is a
        // syntax error, as in Redis, and the connection lives on.
        let e = q::<String>(&mut c, &["SET", "k", "v", "SOON"]).unwrap_err();
        assert!(e.to_string().contains("syntax error"), "{e}");
        let e = q::<String>(&mut c, &["SET", "k", "v", "EX", "ten"]).unwrap_err();
        assert!(
            e.to_string().contains("not an integer or out of range"),
            "{e}"
        );
        let e = q::<i64>(&mut c, &["LPUSH", "k", "v"]).unwrap_err();
        assert!(e.to_string().contains("'LPUSH'"), "{e}");
        // INCR exists (craq keyspaces); its bad arguments are refused here.
        let e = q::<i64>(&mut c, &["INCRBY", "k", "x"]).unwrap_err();
        assert!(
            e.to_string().contains("not an integer or out of range"),
            "{e}"
        );
        let e = q::<i64>(&mut c, &["DECR"]).unwrap_err();
        assert!(e.to_string().contains("wrong number of arguments"), "{e}");
        let e = q::<Value>(&mut c, &["SUBSCRIBE", "chan"]).unwrap_err();
        assert!(e.to_string().contains("'SUBSCRIBE'"), "{e}");
        let e = q::<String>(&mut c, &["GET"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("wrong number of arguments for 'get'"),
            "{e}"
        );
        let e = q::<String>(&mut c, &["MSET", "a", "1", "b"]).unwrap_err();
        assert!(e.to_string().contains("wrong number of arguments"), "{e}");
        let e = q::<String>(&mut c, &["CONFIG", "SET", "save", ""]).unwrap_err();
        assert!(e.to_string().contains("CONFIG SET is not supported"), "{e}");
        // Nothing above reached the node, and the connection still works.
        assert_eq!(q::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    })
    .await;
    assert!(fake.seen.lock().unwrap().requests.is_empty());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_errors_and_the_consistency_extension() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        let e = q::<Option<String>>(&mut c, &["GET", "unavailable-1"]).unwrap_err();
        assert_eq!(e.code(), Some("UNAVAILABLE"), "{e}");
        assert!(
            e.to_string()
                .contains("2 replicas needed, 1 believed alive"),
            "{e}"
        );
        let e = q::<String>(&mut c, &["SET", "timeout-1", "v"]).unwrap_err();
        assert_eq!(e.code(), Some("TIMEOUT"), "{e}");
        let e = q::<String>(&mut c, &["SET", "badrequest-1", "v"]).unwrap_err();
        assert!(e.to_string().contains("refused by the fake"), "{e}");
        let e = q::<Vec<Option<String>>>(&mut c, &["MGET", "ok", "replicafail"]).unwrap_err();
        assert!(e.to_string().contains("replica failure"), "{e}");

        assert_eq!(
            q::<String>(&mut c, &["CASSIO.CONSISTENCY"]).unwrap(),
            "DEFAULT"
        );
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.CONSISTENCY", "one"]).unwrap(),
            "OK"
        );
        assert_eq!(q::<String>(&mut c, &["CASSIO.CONSISTENCY"]).unwrap(), "ONE");
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]).unwrap(), "OK");
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.CONSISTENCY", "ALL"]).unwrap(),
            "OK"
        );
        let e = q::<String>(&mut c, &["SET", "k", "v2"]).unwrap_err();
        assert_eq!(e.code(), Some("UNAVAILABLE"), "{e}");
        assert!(q::<String>(&mut c, &["CASSIO.CONSISTENCY", "most"]).is_err());
        assert_eq!(
            q::<String>(&mut c, &["CASSIO.CONSISTENCY", "default"]).unwrap(),
            "OK"
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["GET", "k"])
                .unwrap()
                .as_deref(),
            Some("v")
        );
    })
    .await;
    let levels: Vec<Option<Consistency>> = fake
        .seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(
            |r| matches!(&r.op, ClientOp::Put { key, .. } | ClientOp::Get { key } if key == "k"),
        )
        .map(|r| r.consistency)
        .collect();
    assert_eq!(
        levels,
        vec![Some(Consistency::One), Some(Consistency::All), None]
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_answer_in_order_and_see_their_own_writes() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        let mut p = redis::pipe();
        for i in 0..200 {
            p.cmd("SET").arg(format!("k{i}")).arg(format!("v{i}"));
            p.cmd("GET").arg(format!("k{i}"));
            p.cmd("SET").arg(format!("k{i}")).arg(format!("w{i}"));
            p.cmd("GET").arg(format!("k{i}"));
        }
        p.cmd("PING");
        let out: Vec<Value> = p.query(&mut c).unwrap();
        assert_eq!(out.len(), 801);
        for i in 0..200 {
            assert_eq!(out[4 * i], Value::Okay);
            assert_eq!(
                out[4 * i + 1],
                Value::BulkString(format!("v{i}").into_bytes())
            );
            assert_eq!(out[4 * i + 2], Value::Okay);
            assert_eq!(
                out[4 * i + 3],
                Value::BulkString(format!("w{i}").into_bytes())
            );
        }
        assert_eq!(out[800], Value::SimpleString("PONG".into()));
        // More than one batch's worth of commands in one go.
        let mut p = redis::pipe();
        for i in 0..3000 {
            p.cmd("ECHO").arg(i);
        }
        let out: Vec<i64> = p.query(&mut c).unwrap();
        assert_eq!(out, (0..3000).collect::<Vec<i64>>());
    })
    .await;
    srv.shutdown().await;
}

/// A node that answers only once `n` requests are waiting at the same time
/// (or fails them all after a few seconds): a gateway that runs them one by
/// one never gets an answer.
fn spawn_barrier_node(n: usize) -> NodeHandle {
    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    tokio::spawn(async move {
        let mut waiting = Vec::new();
        loop {
            let deadline = tokio::time::sleep(Duration::from_secs(3));
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Request(req, reply)) => waiting.push((req, reply)),
                    Some(
                        Command::Status(_)
                        | Command::Repair(..)
                        | Command::Decommission(_)
                        | Command::RemoveDead(..)
                        | Command::ChangeSchema(..)
                        | Command::Layout(_),
                    ) => {}
                    None => return,
                },
                () = deadline => {
                    for (_, reply) in waiting.drain(..) {
                        let _ = reply.send(Err(cassio_node::RequestError::BadRequest("not concurrent".into())));
                    }
                }
            }
            if waiting.len() >= n {
                for (req, reply) in waiting.drain(..) {
                    let v = match req.op {
                        ClientOp::Get { key } => Some(key),
                        _ => None,
                    };
                    let _ = reply.send(Ok(ClientResponse::Value(v)));
                }
            }
        }
    });
    NodeHandle::new(tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_and_pipelined_reads_run_concurrently() {
    let srv = serve_resp(spawn_barrier_node(4)).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        let got: Vec<String> = q(&mut c, &["MGET", "a", "b", "c", "d"]).unwrap();
        assert_eq!(got, vec!["a", "b", "c", "d"]);
        // Four single GETs written in one go are one batch.
        let mut s = raw_connect(addr);
        s.write_all(b"GET w\r\nGET x\r\nGET y\r\nGET z\r\n")
            .unwrap();
        let out = read_until(&mut s, b"$1\r\nz\r\n");
        assert_eq!(&out[..], b"$1\r\nw\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n");
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_protocol_error_and_others_keep_being_served() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut good = connect(addr);
        assert_eq!(q::<String>(&mut good, &["SET", "k", "v"]).unwrap(), "OK");
        let cases: &[&[u8]] = &[
            b"*1\r\n$abc\r\n",
            b"*2\r\n+PING\r\n",
            b"*1\r\n$3\r\nPINGPONG\r\n",
            b"*1\r\n$99999999999\r\n",
            b"*99999999999\r\n",
        ];
        for case in cases {
            let mut s = raw_connect(addr);
            s.write_all(case).unwrap();
            let out = read_to_close(&mut s);
            let text = String::from_utf8_lossy(&out);
            assert!(
                out.starts_with(b"-ERR Protocol error"),
                "{case:?} got {text:?}"
            );
            assert!(out.ends_with(b"\r\n") && out.iter().filter(|b| **b == b'\n').count() == 1);
        }
        // Lines that are not multibulk are inline commands: binary junk is
        // an unknown command, answered, and the connection stays usable.
        let mut s = raw_connect(addr);
        s.write_all(b"$3\r\n\x00\x01\x02\xff\xfe\r\nPING\r\n")
            .unwrap();
        let out = read_until(&mut s, b"+PONG\r\n");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("-ERR unknown or unsupported command '$3'"),
            "{text}"
        );
        assert_eq!(text.matches("-ERR unknown").count(), 2, "{text}");
        // Valid commands before the garbage in the same write are answered.
        let mut s = raw_connect(addr);
        s.write_all(b"PING\r\n*1\r\n$x\r\n").unwrap();
        let out = read_to_close(&mut s);
        assert!(
            out.starts_with(b"+PONG\r\n-ERR Protocol error"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        // An oversize inline line is refused rather than buffered forever.
        let mut s = raw_connect(addr);
        let _ = s.write_all(&vec![b'a'; 200 * 1024]);
        let out = read_to_close(&mut s);
        assert!(out.starts_with(b"-ERR Protocol error: too big inline request"));
        // Random bytes: an error or a close, never a hang or a crash.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20 {
            let mut junk = Vec::new();
            for _ in 0..512 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                junk.push(b"*$\r\n0123-GETSET x"[(state % 17) as usize]);
            }
            junk.extend_from_slice(b"\r\n*1\r\n$zz\r\n");
            let mut s = raw_connect(addr);
            let _ = s.write_all(&junk);
            let mut sink = Vec::new();
            // A reset is fine here; a hang is not (the read timeout fails it).
            if let Err(e) = s.read_to_end(&mut sink) {
                assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "server hung on junk"
                );
            }
        }
        // The well-behaved client was never disturbed.
        assert_eq!(
            q::<Option<String>>(&mut good, &["GET", "k"])
                .unwrap()
                .as_deref(),
            Some("v")
        );
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_quit_and_large_values() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut s = raw_connect(addr);
        s.write_all(b"PING\r\nSET inline value\nGET inline\r\nQUIT\r\nPING\r\n")
            .unwrap();
        let out = read_to_close(&mut s);
        assert_eq!(&out[..], b"+PONG\r\n+OK\r\n$5\r\nvalue\r\n+OK\r\n");

        let mut c = connect(addr);
        let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let _: () = redis::cmd("SET")
            .arg("big")
            .arg(&big)
            .query(&mut c)
            .unwrap();
        let got: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
        assert!(got == big, "4 MiB value round-trips");
        let long_key = vec![b'k'; cassio_node::gateway::MAX_KEY_BYTES + 1];
        let e = redis::cmd("GET")
            .arg(&long_key)
            .query::<Option<String>>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_gives_errors_not_hangs() {
    let srv = serve_resp(dead_handle()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut c = connect(addr);
        let e = q::<Option<String>>(&mut c, &["GET", "k"]).unwrap_err();
        assert!(e.to_string().contains("node is not running"), "{e}");
        assert_eq!(q::<String>(&mut c, &["PING"]).unwrap(), "PONG");
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    let mut idle = blocking(move || {
        let mut c = raw_connect(addr);
        c.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_until(&mut c, b"\r\n"), b"+PONG\r\n");
        c
    })
    .await;
    let started = Instant::now();
    srv.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connections do not delay shutdown"
    );
    blocking(move || {
        assert_eq!(read_to_close(&mut idle), b"");
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    })
    .await;
}

/// Runs a Redis tool with a deadline; the tools are required (CI installs
/// `redis-tools`), so a missing one fails the test.
fn run_tool(tool: &str, args: &[String], stdin: Option<&[u8]>) -> (String, String) {
    let path = format!("/usr/bin/{tool}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's redis-tools (apt-get install -y redis-tools)"
    );
    let mut child = std::process::Command::new(&path)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut i = child.stdin.take().unwrap();
        i.write_all(input).unwrap();
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("{tool} {args:?} did not finish in 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{tool} {args:?} failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_works() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let port = srv.addr.port().to_string();
    blocking(move || {
        let cli = |args: &[&str]| {
            let mut all = vec!["-h".to_string(), "127.0.0.1".into(), "-p".into(), port.clone()];
            all.extend(args.iter().map(|s| s.to_string()));
            run_tool("redis-cli", &all, None).0
        };
        assert_eq!(cli(&["PING"]), "PONG\n");
        assert_eq!(cli(&["SET", "user1", "{\"name\": \"Jack\"}"]), "OK\n");
        assert_eq!(cli(&["GET", "user1"]), "{\"name\": \"Jack\"}\n");
        assert_eq!(cli(&["--no-raw", "GET", "missing"]), "(nil)\n");
        assert_eq!(cli(&["DEL", "user1"]), "1\n");
        assert_eq!(cli(&["SET", "k", "v", "EX", "5"]), "OK\n");
        assert_eq!(cli(&["DEL", "k"]), "1\n");
        assert!(cli(&["SET", "k", "v", "EX", "0"]).contains("invalid expire time in 'set' command"));
        assert!(cli(&["INFO", "server"]).contains("redis_version:"));
        // Mass insertion through --pipe: one long pipeline.
        let mut input = Vec::new();
        for i in 0..1000 {
            let (k, v) = (format!("p{i}"), format!("v{i}"));
            input.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len()).as_bytes(),
            );
        }
        let args = vec!["-h".into(), "127.0.0.1".into(), "-p".into(), port.clone(), "--pipe".into()];
        let (out, _) = run_tool("redis-cli", &args, Some(&input));
        assert!(out.contains("errors: 0, replies: 1000"), "{out}");
        assert_eq!(cli(&["GET", "p999"]), "v999\n");
    })
    .await;
    assert_eq!(fake.data.lock().unwrap().len(), 1000);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_runs_cleanly() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let port = srv.addr.port().to_string();
    let (out, err) = blocking(move || {
        let args: Vec<String> = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "4",
            "-P",
            "8",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run_tool("redis-benchmark", &args, None)
    })
    .await;
    assert!(
        out.contains("SET:") && out.contains("GET:"),
        "stdout {out:?} stderr {err:?}"
    );
    assert!(
        !out.contains("ERR") && !err.contains("WARNING") && !err.contains("ERR"),
        "stdout {out:?} stderr {err:?}"
    );
    srv.shutdown().await;
}

/// Sends `request` and checks that exactly `expected` comes back.
fn exchange(s: &mut TcpStream, request: &[u8], expected: &[u8]) {
    s.write_all(request).unwrap();
    let mut got = vec![0u8; expected.len()];
    if let Err(e) = s.read_exact(&mut got) {
        panic!(
            "{:?}: wanted {:?}: {e}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(expected)
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "answer to {:?}",
        String::from_utf8_lossy(request)
    );
}

/// A command as a RESP array of bulk strings.
fn resp_cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// The `HELLO` reply Redis 7 gives, in RESP3 (a map) or RESP2 (a flat array).
fn hello_reply(proto: u8, id: &str) -> Vec<u8> {
    let head = if proto == 3 { "%7" } else { "*14" };
    format!(
        "{head}\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
         $5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_resp3_after_hello_3_and_back_to_resp2() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let mut s = raw_connect(addr);
        s.write_all(&resp_cmd(&["CLIENT", "ID"])).unwrap();
        let id_line = read_until(&mut s, b"\r\n");
        let id = std::str::from_utf8(&id_line[1..id_line.len() - 2])
            .unwrap()
            .to_string();
        assert!(id_line.starts_with(b":") && id.parse::<u64>().is_ok());

        // RESP2 first: the nil bulk, as always.
        exchange(&mut s, &resp_cmd(&["GET", "missing"]), b"$-1\r\n");
        exchange(&mut s, &resp_cmd(&["HELLO", "3"]), &hello_reply(3, &id));
        exchange(&mut s, &resp_cmd(&["PING"]), b"+PONG\r\n");
        exchange(&mut s, &resp_cmd(&["SET", "k", "v"]), b"+OK\r\n");
        exchange(&mut s, &resp_cmd(&["GET", "k"]), b"$1\r\nv\r\n");
        exchange(&mut s, &resp_cmd(&["GET", "missing"]), b"_\r\n");
        exchange(
            &mut s,
            &resp_cmd(&["MGET", "k", "missing", "k"]),
            b"*3\r\n$1\r\nv\r\n_\r\n$1\r\nv\r\n",
        );
        exchange(&mut s, &resp_cmd(&["EXISTS", "k", "missing"]), b":1\r\n");
        exchange(
            &mut s,
            &resp_cmd(&["CONFIG", "GET", "appendonly"]),
            b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        );
        exchange(&mut s, &resp_cmd(&["CLIENT", "GETNAME"]), b"_\r\n");
        exchange(
            &mut s,
            &resp_cmd(&["COMMAND", "INFO", "get", "nosuch"]),
            b"*2\r\n*6\r\n$3\r\nget\r\n:2\r\n~2\r\n$8\r\nreadonly\r\n$4\r\nfast\r\n:1\r\n:1\r\n:1\r\n_\r\n",
        );
        exchange(&mut s, &resp_cmd(&["COMMAND", "DOCS", "nosuch"]), b"%0\r\n");
        exchange(
            &mut s,
            &resp_cmd(&["COMMAND", "DOCS", "get"]),
            b"%1\r\n$3\r\nget\r\n%3\r\n$7\r\nsummary\r\n$27\r\nReturns the value of a key.\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$7\r\ngeneric\r\n",
        );
        exchange(&mut s, &resp_cmd(&["DEL", "k", "missing"]), b":1\r\n");
        exchange(&mut s, &resp_cmd(&["GET", "k"]), b"_\r\n");
        // INFO is a verbatim string whose length counts the `txt:` prefix.
        s.write_all(&resp_cmd(&["INFO", "replication"])).unwrap();
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n";
        let want = format!("={}\r\ntxt:{text}\r\n", text.len() + 4);
        let got = read_until(&mut s, b"\r\n\r\n\r\n");
        assert_eq!(String::from_utf8_lossy(&got), want);

        // A refused HELLO changes nothing: still RESP3, still no name.
        exchange(
            &mut s,
            &resp_cmd(&["HELLO", "4"]),
            b"-NOPROTO unsupported protocol version\r\n",
        );
        s.write_all(&resp_cmd(&["HELLO", "2", "AUTH", "default", "secret"]))
            .unwrap();
        let refused = String::from_utf8(read_until(&mut s, b"\r\n")).unwrap();
        assert!(
            refused.starts_with("-ERR AUTH refused: this node has no users configured"),
            "{refused}"
        );
        s.write_all(&resp_cmd(&["AUTH", "secret"])).unwrap();
        let refused = String::from_utf8(read_until(&mut s, b"\r\n")).unwrap();
        assert!(
            refused.contains("no users configured"),
            "{refused}"
        );
        exchange(&mut s, &resp_cmd(&["GET", "missing"]), b"_\r\n");
        exchange(&mut s, &resp_cmd(&["CLIENT", "GETNAME"]), b"_\r\n");

        // HELLO 2 goes back, naming the connection on the way.
        exchange(
            &mut s,
            &resp_cmd(&["HELLO", "2", "SETNAME", "myapp"]),
            &hello_reply(2, &id),
        );
        exchange(&mut s, &resp_cmd(&["GET", "missing"]), b"$-1\r\n");
        exchange(
            &mut s,
            &resp_cmd(&["CLIENT", "GETNAME"]),
            b"$5\r\nmyapp\r\n",
        );
        exchange(
            &mut s,
            &resp_cmd(&["CONFIG", "GET", "appendonly"]),
            b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        );
        // No protover: the current protocol, answered in it.
        exchange(&mut s, &resp_cmd(&["HELLO"]), &hello_reply(2, &id));

        // One pipeline across the switch: each reply in the protocol in
        // force after its command.
        let mut pipe = resp_cmd(&["GET", "missing"]);
        pipe.extend(resp_cmd(&["HELLO", "3"]));
        pipe.extend(resp_cmd(&["GET", "missing"]));
        pipe.extend(resp_cmd(&["MGET", "missing"]));
        let mut want = b"$-1\r\n".to_vec();
        want.extend(hello_reply(3, &id));
        want.extend_from_slice(b"_\r\n*1\r\n_\r\n");
        exchange(&mut s, &pipe, &want);
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_with_resp3() {
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let addr = srv.addr;
    blocking(move || {
        let client = redis::Client::open(format!("redis://{addr}/?protocol=resp3")).unwrap();
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(q::<String>(&mut c, &["PING"]).unwrap(), "PONG");
        assert_eq!(q::<String>(&mut c, &["SET", "a", "1"]).unwrap(), "OK");
        assert_eq!(q::<Value>(&mut c, &["GET", "nobody"]).unwrap(), Value::Nil);
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "nobody"]).unwrap(),
            vec![Some("1".to_string()), None]
        );
        let hello: Value = q(&mut c, &["HELLO"]).unwrap();
        let Value::Map(pairs) = hello else {
            panic!("HELLO answers a map under RESP3: {hello:?}")
        };
        assert!(pairs.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
        let cfg: Value = q(&mut c, &["CONFIG", "GET", "databases"]).unwrap();
        assert_eq!(
            cfg,
            Value::Map(vec![(
                Value::BulkString(b"databases".to_vec()),
                Value::BulkString(b"1".to_vec())
            )])
        );
        let info: Value = q(&mut c, &["INFO", "server"]).unwrap();
        let Value::VerbatimString { text, .. } = info else {
            panic!("INFO is a verbatim string under RESP3: {info:?}")
        };
        assert!(text.contains("redis_version:"), "{text}");
        assert_eq!(q::<i64>(&mut c, &["DEL", "a", "nobody"]).unwrap(), 1);
    })
    .await;
    assert!(fake.data.lock().unwrap().is_empty());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_speaks_resp3() {
    if !std::path::Path::new("/usr/bin/redis-cli").exists() {
        eprintln!("skipped: /usr/bin/redis-cli is missing (apt-get install -y redis-tools)");
        return;
    }
    let fake = spawn_fake();
    let srv = serve_resp(fake.handle.clone()).await;
    let port = srv.addr.port().to_string();
    blocking(move || {
        // `-3` makes redis-cli open every connection with `HELLO 3`.
        let cli = |args: &[&str]| {
            let mut all = vec![
                "-3".to_string(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.clone(),
            ];
            all.extend(args.iter().map(|s| s.to_string()));
            run_tool("redis-cli", &all, None).0
        };
        assert_eq!(cli(&["PING"]), "PONG\n");
        assert_eq!(cli(&["SET", "user1", "Jack"]), "OK\n");
        assert_eq!(cli(&["GET", "user1"]), "Jack\n");
        assert_eq!(cli(&["--no-raw", "GET", "missing"]), "(nil)\n");
        assert_eq!(
            cli(&["--no-raw", "MGET", "user1", "missing"]),
            "1) \"Jack\"\n2) (nil)\n"
        );
        assert_eq!(
            cli(&["--no-raw", "CONFIG", "GET", "appendonly"]),
            "1# \"appendonly\" => \"no\"\n"
        );
        let hello = cli(&["--no-raw", "HELLO"]);
        assert!(hello.contains("3# \"proto\" => (integer) 3"), "{hello}");
        assert!(cli(&["INFO", "server"]).contains("redis_version:"));
        assert_eq!(cli(&["DEL", "user1"]), "1\n");
    })
    .await;
    assert!(fake.data.lock().unwrap().is_empty());
    srv.shutdown().await;
}
