//! The real-client matrix (issue 14): the clients Redis users have, each in
//! a session against real `cassio start` processes on free loopback ports.
//!
//! Two single-node clusters are started, both with a users file (`cassio
//! hash-password`): one plaintext RESP port, one with `--client-tls-cert` /
//! `--client-tls-key` from `cassio gen-certs --client`. Every session checks
//! get/set/del, all 256 byte values, a 1 MiB value, a pipeline of 1,000
//! commands, MGET/MSET, AUTH success and failure, TLS, an unknown
//! command's error naming it on a connection that stays usable, and:
//!
//! - `expiry`: `SET EX` then `TTL`/`PTTL`, `PEXPIRE 300` then after 1 s
//!   `GET` nil and `TTL` -2, `SETEX`, `PERSIST` (`TTL` -1), `EXPIRE` of a
//!   missing key 0;
//! - `hashes_concurrent`: four connections (threads, `Promise.all`, or
//!   `redis-cli` processes) released together `HSET` 50 fields each of one
//!   hash; `HGETALL` holds all 200 with their values, `HLEN`, `HDEL` then
//!   `HEXISTS` 0, `HMGET` with missing fields, `TYPE` hash/string/none;
//! - `scan_10000`: 10,000 keys written pipelined under the session's
//!   prefix come back from the client's own SCAN iterator (`scan_iter`,
//!   `scanBufferStream`, `scanIterator`, `scan_options`, `redis-cli
//!   --scan --pattern`) exactly once each (counted with duplicates);
//!   `DBSIZE` is within 10% of what a full SCAN counts; `KEYS` of a prefix
//!   with 10 keys lists those 10.
//!
//! The sessions run one after another against the same two nodes, each
//! under its own key prefix, so a whole-node count (DBSIZE against a full
//! SCAN) sees no writes in between. The sessions are:
//!
//! - redis-py with its default protocol (RESP3 in redis-py 8) and with
//!   `protocol=2` (`tests/clients/session.py`),
//! - ioredis and node-redis from npm (`tests/clients/session.cjs`),
//! - the Rust `redis` crate (in this file),
//! - `redis-cli` (in this file),
//! - `redis-benchmark`: a short run over plaintext and TLS, no errors.
//!
//! The clients are installed by `.ci/clients.sh` (run by `.ci/run`) into
//! `$HOME/.cache/cassio-ci`; `CASSIO_CLIENTS_PYTHON` and
//! `CASSIO_CLIENTS_NODE_MODULES` point elsewhere. A missing client FAILS the
//! test with the command that installs it; only an explicit
//! `CASSIO_SKIP_REAL_CLIENTS=1` (which `.ci/run` never sets) skips it.
//!
//! A later check is one more function in each script and here, and one
//! more name in `CHECKS`.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{start_node, Proc, BIN};
use redis::Commands;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What every session must report as passed (`ok NAME`).
const CHECKS: &[&str] = &[
    "get_set_del",
    "binary_values",
    "one_mib_value",
    "pipeline_1000",
    "mget_mset",
    "unknown_command",
    "auth_ok_and_failure",
    "tls",
    "expiry",
    "hashes_concurrent",
    "scan_10000",
];

const USER: &str = "alice";
const PASSWORD: &str = "alice-pw";
const SESSION_LIMIT: Duration = Duration::from_secs(120);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` with `stdin`, killing it past `limit`.
fn run_for(mut cmd: Command, stdin: &[u8], limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    // Writing and reading in threads: a child may fill its output pipe
    // before it has read all of its input.
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let ereader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: ereader.join().unwrap(),
    }
}

fn run(cmd: Command, stdin: &[u8]) -> Output {
    run_for(cmd, stdin, Duration::from_secs(30))
}

fn hash(secret: &str) -> String {
    let mut c = Command::new(BIN);
    c.arg("hash-password");
    let out = run(c, format!("{secret}\n").as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The two nodes every session talks to.
struct Nodes {
    _plain: Proc,
    _tls: Proc,
    port: u16,
    tls_port: u16,
    ca: PathBuf,
}

fn start_nodes(dir: &Path) -> Nodes {
    let certs = dir.join("certs");
    let mut gen = Command::new(BIN);
    gen.args(["gen-certs", "--nodes", "1", "--client", "--dir"])
        .arg(&certs);
    let out = run(gen, b"");
    assert!(out.status.success(), "{}", text(&out));
    let users = format!(
        "[[users]]\nname = \"{USER}\"\npassword_hash = \"{}\"\naccess = \"read-write\"\n",
        hash(PASSWORD)
    );
    let plain_cfg = dir.join("plain.toml");
    std::fs::write(&plain_cfg, &users).unwrap();
    let tls_cfg = dir.join("tls.toml");
    std::fs::write(
        &tls_cfg,
        format!(
            "client_tls_cert = \"{}\"\nclient_tls_key = \"{}\"\n\n{users}",
            certs.join("client.pem").display(),
            certs.join("client.key").display(),
        ),
    )
    .unwrap();
    let args = |cfg: &Path, data: &str| -> Vec<String> {
        [
            "--config",
            &cfg.display().to_string(),
            "--data-dir",
            &dir.join(data).display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--client-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (plain, r1) = start_node("plain", dir, &args(&plain_cfg, "plain-data"));
    let (tls, r2) = start_node("tls", dir, &args(&tls_cfg, "tls-data"));
    Nodes {
        _plain: plain,
        _tls: tls,
        port: r1.resp.unwrap().port(),
        tls_port: r2.resp.unwrap().port(),
        ca: certs.join("ca.pem"),
    }
}

/// Where a client lives: an environment variable, else the cache path
/// `.ci/clients.sh` installs to.
fn client_path(var: &str, cached: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(cached)
    });
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: install the real clients with `bash .ci/clients.sh` (or set {var}; \
             CASSIO_SKIP_REAL_CLIENTS=1 skips this test)",
            path.display()
        ))
    }
}

fn tool(name: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(format!("/usr/bin/{name}"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: `apt-get install redis-tools` (.ci/run installs it)",
            path.display()
        ))
    }
}

/// A session's output must name every check as passed.
fn judge(name: &str, out: &Output) -> Result<String, String> {
    let all = text(out);
    if !out.status.success() {
        return Err(format!("{name} failed ({}):\n{all}", out.status));
    }
    let missing: Vec<&&str> = CHECKS
        .iter()
        .filter(|c| !all.lines().any(|l| l.trim() == format!("ok {c}")))
        .collect();
    if !missing.is_empty() {
        return Err(format!("{name} did not pass {missing:?}:\n{all}"));
    }
    Ok(all)
}

fn script_args(n: &Nodes, prefix: &str) -> Vec<String> {
    vec![
        "--port".into(),
        n.port.to_string(),
        "--tls-port".into(),
        n.tls_port.to_string(),
        "--ca".into(),
        n.ca.display().to_string(),
        "--user".into(),
        USER.into(),
        "--password".into(),
        PASSWORD.into(),
        "--prefix".into(),
        prefix.into(),
    ]
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn redis_py(n: &Nodes, protocol: Option<u8>) -> Result<String, String> {
    let python = client_path(
        "CASSIO_CLIENTS_PYTHON",
        ".cache/cassio-ci/clients-venv/bin/python",
    )?;
    let mut c = Command::new(python);
    c.arg(scripts().join("session.py"));
    let prefix = match protocol {
        Some(p) => {
            c.args(["--protocol", &p.to_string()]);
            format!("py{p}:")
        }
        None => "pydefault:".into(),
    };
    c.args(script_args(n, &prefix));
    let out = run_for(c, b"", SESSION_LIMIT);
    let all = judge("redis-py", &out)?;
    // The point of the default-protocol session: redis-py 8 speaks RESP3
    // unless told otherwise, and the session checked the protocol it got.
    if protocol.is_none() && !all.contains("ok connect_handshake") {
        return Err(format!("redis-py's handshake check is missing:\n{all}"));
    }
    Ok(all)
}

fn node_client(n: &Nodes, client: &str) -> Result<String, String> {
    let modules = client_path(
        "CASSIO_CLIENTS_NODE_MODULES",
        ".cache/cassio-ci/node-clients/node_modules",
    )?;
    let node = ["/usr/bin/node", "/usr/local/bin/node"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("node is missing: `bash .ci/clients.sh` installs nodejs and npm")?;
    let mut c = Command::new(node);
    c.env("NODE_PATH", modules)
        .arg(scripts().join("session.cjs"))
        .args(["--client", client])
        .args(script_args(n, &format!("{client}:")));
    let out = run_for(c, b"", SESSION_LIMIT);
    judge(client, &out)
}

/// The Rust `redis` crate's session, with the same checks as the scripts.
fn rust_redis(n: &Nodes) -> Result<String, String> {
    let mut log = String::new();
    let mut ok = |name: &str| log.push_str(&format!("ok {name}\n"));
    let url = |port: u16, pw: &str| format!("redis://{USER}:{pw}@127.0.0.1:{port}/");
    let connect = |url: String| -> redis::RedisResult<redis::Connection> {
        redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(10))
    };
    let fail = |what: &str, e: &dyn std::fmt::Debug| format!("redis crate: {what}: {e:?}");
    let mut r = connect(url(n.port, PASSWORD)).map_err(|e| fail("connect", &e))?;
    r.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| fail("timeout", &e))?;
    let q = |r: &mut redis::Connection, args: &[&[u8]]| -> redis::RedisResult<redis::Value> {
        let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap_or("?"));
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(r)
    };
    use redis::Value as V;
    let bulk = |b: &[u8]| V::BulkString(b.to_vec());
    let expect = |got: redis::RedisResult<V>, want: V, what: &str| -> Result<(), String> {
        match got {
            Ok(v) if v == want => Ok(()),
            other => Err(format!("redis crate: {what}: got {other:?}, want {want:?}")),
        }
    };
    let okv = V::Okay;
    expect(q(&mut r, &[b"SET", b"rs:k", b"v1"]), okv.clone(), "SET")?;
    expect(q(&mut r, &[b"GET", b"rs:k"]), bulk(b"v1"), "GET")?;
    expect(q(&mut r, &[b"DEL", b"rs:k"]), V::Int(1), "DEL")?;
    expect(q(&mut r, &[b"GET", b"rs:k"]), V::Nil, "GET deleted")?;
    ok("get_set_del");
    let all: Vec<u8> = (0..=255u8).collect();
    expect(
        q(&mut r, &[b"SET", b"rs:bin", &all]),
        okv.clone(),
        "SET bin",
    )?;
    expect(q(&mut r, &[b"GET", b"rs:bin"]), bulk(&all), "GET bin")?;
    let binkey = [b"rs:".as_slice(), &all].concat();
    expect(
        q(&mut r, &[b"SET", &binkey, b"x"]),
        okv.clone(),
        "SET binkey",
    )?;
    expect(q(&mut r, &[b"GET", &binkey]), bulk(b"x"), "GET binkey")?;
    ok("binary_values");
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 256) as u8).collect();
    expect(
        q(&mut r, &[b"SET", b"rs:big", &big]),
        okv.clone(),
        "SET 1 MiB",
    )?;
    expect(q(&mut r, &[b"GET", b"rs:big"]), bulk(&big), "GET 1 MiB")?;
    ok("one_mib_value");
    let mut p = redis::pipe();
    for i in 0..500 {
        p.cmd("SET").arg(format!("rs:p{i}")).arg(i.to_string());
    }
    for i in 0..500 {
        p.cmd("GET").arg(format!("rs:p{i}"));
    }
    let got: Vec<V> = p.query(&mut r).map_err(|e| fail("pipeline", &e))?;
    let want: Vec<V> = (0..500)
        .map(|_| V::Okay)
        .chain((0..500).map(|i| bulk(i.to_string().as_bytes())))
        .collect();
    if got != want {
        return Err(format!("redis crate: pipeline of 1,000 answered {got:?}"));
    }
    ok("pipeline_1000");
    expect(
        q(&mut r, &[b"MSET", b"rs:m1", b"a", b"rs:m2", b"b"]),
        okv.clone(),
        "MSET",
    )?;
    expect(
        q(&mut r, &[b"MGET", b"rs:m1", b"rs:m2", b"rs:none"]),
        V::Array(vec![bulk(b"a"), bulk(b"b"), V::Nil]),
        "MGET",
    )?;
    ok("mget_mset");
    match q(&mut r, &[b"NOSUCHCMD", b"x"]) {
        Err(e) if e.to_string().to_lowercase().contains("nosuchcmd") => {}
        other => return Err(format!("redis crate: NOSUCHCMD answered {other:?}")),
    }
    expect(
        q(&mut r, &[b"PING"]),
        V::SimpleString("PONG".into()),
        "PING",
    )?;
    ok("unknown_command");
    match connect(url(n.port, "wrong")).and_then(|mut c| q(&mut c, &[b"PING"])) {
        // The crate turns the server's WRONGPASS into its own kind.
        Err(e)
            if e.kind() == redis::ErrorKind::AuthenticationFailed
                || e.to_string().contains("WRONGPASS") => {}
        other => return Err(format!("redis crate: a wrong password gave {other:?}")),
    }
    let mut anon = connect(format!("redis://127.0.0.1:{}/", n.port))
        .map_err(|e| fail("connect without AUTH", &e))?;
    match q(&mut anon, &[b"GET", b"rs:k"]) {
        Err(e) if e.to_string().contains("NOAUTH") => {}
        other => return Err(format!("redis crate: GET without AUTH gave {other:?}")),
    }
    ok("auth_ok_and_failure");
    let ca = std::fs::read(&n.ca).map_err(|e| fail("read CA", &e))?;
    let tls = redis::Client::build_with_tls(
        format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{}/", n.tls_port),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
    .map_err(|e| fail("TLS client", &e))?;
    let mut t = tls
        .get_connection_with_timeout(Duration::from_secs(10))
        .map_err(|e| fail("TLS connect", &e))?;
    expect(q(&mut t, &[b"SET", b"rs:tls", &all]), okv, "SET over TLS")?;
    expect(q(&mut t, &[b"GET", b"rs:tls"]), bulk(&all), "GET over TLS")?;
    ok("tls");

    let int = |got: redis::RedisResult<V>, what: &str| -> Result<i64, String> {
        match got {
            Ok(V::Int(i)) => Ok(i),
            other => Err(format!(
                "redis crate: {what}: got {other:?}, want an integer"
            )),
        }
    };
    let within = |v: i64, range: std::ops::RangeInclusive<i64>, what: &str| {
        if range.contains(&v) {
            Ok(())
        } else {
            Err(format!("redis crate: {what} is {v}, want {range:?}"))
        }
    };
    expect(
        q(&mut r, &[b"SET", b"rs:ttl", b"v", b"EX", b"100"]),
        V::Okay,
        "SET EX",
    )?;
    within(int(q(&mut r, &[b"TTL", b"rs:ttl"]), "TTL")?, 1..=100, "TTL")?;
    within(
        int(q(&mut r, &[b"PTTL", b"rs:ttl"]), "PTTL")?,
        1..=100_000,
        "PTTL",
    )?;
    expect(
        q(&mut r, &[b"PEXPIRE", b"rs:ttl", b"300"]),
        V::Int(1),
        "PEXPIRE",
    )?;
    within(
        int(q(&mut r, &[b"PTTL", b"rs:ttl"]), "PTTL")?,
        1..=300,
        "PTTL after PEXPIRE",
    )?;
    std::thread::sleep(Duration::from_secs(1));
    expect(q(&mut r, &[b"GET", b"rs:ttl"]), V::Nil, "GET expired")?;
    expect(q(&mut r, &[b"TTL", b"rs:ttl"]), V::Int(-2), "TTL expired")?;
    expect(q(&mut r, &[b"PTTL", b"rs:ttl"]), V::Int(-2), "PTTL expired")?;
    expect(
        q(&mut r, &[b"SETEX", b"rs:setex", b"100", b"w"]),
        V::Okay,
        "SETEX",
    )?;
    within(
        int(q(&mut r, &[b"TTL", b"rs:setex"]), "TTL")?,
        1..=100,
        "TTL after SETEX",
    )?;
    expect(q(&mut r, &[b"GET", b"rs:setex"]), bulk(b"w"), "GET SETEX")?;
    expect(q(&mut r, &[b"PERSIST", b"rs:setex"]), V::Int(1), "PERSIST")?;
    expect(
        q(&mut r, &[b"TTL", b"rs:setex"]),
        V::Int(-1),
        "TTL after PERSIST",
    )?;
    expect(
        q(&mut r, &[b"PERSIST", b"rs:setex"]),
        V::Int(0),
        "PERSIST without expiry",
    )?;
    expect(
        q(&mut r, &[b"GET", b"rs:setex"]),
        bulk(b"w"),
        "GET after PERSIST",
    )?;
    expect(
        q(&mut r, &[b"EXPIRE", b"rs:ttl-missing", b"100"]),
        V::Int(0),
        "EXPIRE missing",
    )?;
    expect(
        q(&mut r, &[b"TTL", b"rs:ttl-missing"]),
        V::Int(-2),
        "TTL missing",
    )?;
    ok("expiry");

    // Writers on their own connections, released together, each HSET-ing
    // its own fields of one hash.
    let (writers, fields) = (4usize, 50usize);
    let field = |w: usize, f: usize| (format!("w{w}f{f}"), format!("{w}:{f}"));
    let start = std::sync::Barrier::new(writers);
    let answers: Vec<Result<Vec<V>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (start, field) = (&start, &field);
                s.spawn(move || -> Result<Vec<V>, String> {
                    let c = connect(url(n.port, PASSWORD));
                    // Every writer reaches the barrier, connected or not.
                    start.wait();
                    let mut c = c.map_err(|e| fail("writer connect", &e))?;
                    c.set_read_timeout(Some(Duration::from_secs(20)))
                        .map_err(|e| fail("timeout", &e))?;
                    (0..fields)
                        .map(|f| {
                            let (k, v) = field(w, f);
                            q(&mut c, &[b"HSET", b"rs:hash", k.as_bytes(), v.as_bytes()])
                                .map_err(|e| fail("HSET", &e))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
            .collect()
    });
    for got in answers {
        let got = got?;
        if got != vec![V::Int(1); fields] {
            return Err(format!("redis crate: concurrent HSETs answered {got:?}"));
        }
    }
    let want: HashMap<Vec<u8>, Vec<u8>> = (0..writers)
        .flat_map(|w| (0..fields).map(move |f| (w, f)))
        .map(|(w, f)| {
            let (k, v) = field(w, f);
            (k.into_bytes(), v.into_bytes())
        })
        .collect();
    let got: HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg("rs:hash")
        .query(&mut r)
        .map_err(|e| fail("HGETALL", &e))?;
    if got != want {
        return Err(format!(
            "redis crate: HGETALL has {} fields, {} of them right, want {}",
            got.len(),
            want.iter().filter(|(k, v)| got.get(*k) == Some(v)).count(),
            want.len()
        ));
    }
    let total = i64::try_from(writers * fields).unwrap();
    expect(q(&mut r, &[b"HLEN", b"rs:hash"]), V::Int(total), "HLEN")?;
    expect(
        q(&mut r, &[b"HDEL", b"rs:hash", b"w0f0"]),
        V::Int(1),
        "HDEL",
    )?;
    expect(
        q(&mut r, &[b"HEXISTS", b"rs:hash", b"w0f0"]),
        V::Int(0),
        "HEXISTS deleted",
    )?;
    expect(
        q(&mut r, &[b"HEXISTS", b"rs:hash", b"w1f0"]),
        V::Int(1),
        "HEXISTS",
    )?;
    expect(
        q(&mut r, &[b"HLEN", b"rs:hash"]),
        V::Int(total - 1),
        "HLEN after HDEL",
    )?;
    expect(
        q(
            &mut r,
            &[b"HMGET", b"rs:hash", b"w1f1", b"w0f0", b"nofield"],
        ),
        V::Array(vec![bulk(b"1:1"), V::Nil, V::Nil]),
        "HMGET",
    )?;
    let simple = |s: &str| V::SimpleString(s.into());
    expect(
        q(&mut r, &[b"TYPE", b"rs:hash"]),
        simple("hash"),
        "TYPE hash",
    )?;
    expect(
        q(&mut r, &[b"SET", b"rs:plain", b"x"]),
        V::Okay,
        "SET plain",
    )?;
    expect(
        q(&mut r, &[b"TYPE", b"rs:plain"]),
        simple("string"),
        "TYPE string",
    )?;
    expect(
        q(&mut r, &[b"TYPE", b"rs:type-missing"]),
        simple("none"),
        "TYPE missing",
    )?;
    ok("hashes_concurrent");

    let want: HashSet<Vec<u8>> = (0..10_000)
        .map(|i| format!("rs:scan:{i}").into_bytes())
        .collect();
    let mut p = redis::pipe();
    for k in &want {
        p.cmd("SET").arg(k).arg("s");
    }
    let got: Vec<V> = p
        .query(&mut r)
        .map_err(|e| fail("pipeline of 10,000", &e))?;
    if got.len() != 10_000 || got.iter().any(|v| *v != V::Okay) {
        return Err("redis crate: a SET of the 10,000 failed".into());
    }
    // `Vec<u8>` items: the crate's iterator silently stops at a key it
    // cannot convert, and a count would then come out short.
    let scanned: Vec<Vec<u8>> = r
        .scan_options(
            redis::ScanOptions::default()
                .with_pattern("rs:scan:*")
                .with_count(1000),
        )
        .map_err(|e| fail("SCAN", &e))?
        .collect();
    let distinct: HashSet<Vec<u8>> = scanned.iter().cloned().collect();
    if scanned.len() != 10_000 || distinct != want {
        return Err(format!(
            "redis crate: SCAN MATCH rs:scan:* returned {} keys, {} distinct, {} of the 10,000",
            scanned.len(),
            distinct.len(),
            distinct.intersection(&want).count()
        ));
    }
    // DBSIZE is an estimate: within 10% of what a full scan counts (the
    // sessions run one after another, so nothing writes meanwhile).
    let size: i64 = redis::cmd("DBSIZE")
        .query(&mut r)
        .map_err(|e| fail("DBSIZE", &e))?;
    let every = r
        .scan_options::<Vec<u8>>(redis::ScanOptions::default().with_count(1000))
        .map_err(|e| fail("SCAN", &e))?
        .count();
    let every = i64::try_from(every).unwrap();
    if every < 10_000 || (size - every).abs() > every / 10 {
        return Err(format!(
            "redis crate: DBSIZE {size}, a full SCAN counted {every}"
        ));
    }
    let few: Vec<String> = (0..10).map(|i| format!("rs:keys:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &few {
        mset.arg(k).arg("k");
    }
    expect(mset.query(&mut r), V::Okay, "MSET")?;
    let mut listed: Vec<String> = redis::cmd("KEYS")
        .arg("rs:keys:*")
        .query(&mut r)
        .map_err(|e| fail("KEYS", &e))?;
    listed.sort();
    let mut sorted = few.clone();
    sorted.sort();
    if listed != sorted {
        return Err(format!("redis crate: KEYS rs:keys:* gave {listed:?}"));
    }
    ok("scan_10000");
    Ok(log)
}

/// `redis-cli` as a user types it: one command per invocation, `-x` for
/// values from stdin, `--pipe` for the pipeline, commands on stdin for a
/// session on one connection.
fn redis_cli(n: &Nodes) -> Result<String, String> {
    let bin = tool("redis-cli")?;
    let mut log = String::new();
    let cli = |auth: Option<&str>, tls: bool, args: &[&str], stdin: &[u8]| -> Output {
        let mut c = Command::new(&bin);
        c.args(["-h", "127.0.0.1"]);
        if tls {
            c.args(["-p", &n.tls_port.to_string(), "--tls", "--cacert"])
                .arg(&n.ca);
        } else {
            c.args(["-p", &n.port.to_string()]);
        }
        if let Some(pw) = auth {
            c.args(["--user", USER, "--pass", pw, "--no-auth-warning"]);
        }
        c.args(args);
        run(c, stdin)
    };
    let pw = Some(PASSWORD);
    let check = |name: &str, out: &Output, ok: &dyn Fn(&[u8]) -> bool| -> Result<(), String> {
        if out.status.success() && ok(&out.stdout) {
            Ok(())
        } else {
            Err(format!("redis-cli {name}: {}", text(out)))
        }
    };
    let trimmed = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    check("SET", &cli(pw, false, &["SET", "cli:k", "v1"], b""), &|o| {
        trimmed(o) == "OK"
    })?;
    check("GET", &cli(pw, false, &["GET", "cli:k"], b""), &|o| {
        trimmed(o) == "v1"
    })?;
    check("DEL", &cli(pw, false, &["DEL", "cli:k"], b""), &|o| {
        trimmed(o) == "1"
    })?;
    log.push_str("ok get_set_del\n");
    // `-x` sends stdin as the last argument; `--raw` prints the value's
    // bytes followed by a newline.
    let all: Vec<u8> = (0..=255u8).collect();
    check(
        "SET -x",
        &cli(pw, false, &["-x", "SET", "cli:bin"], &all),
        &|o| trimmed(o) == "OK",
    )?;
    let want = [all.as_slice(), b"\n"].concat();
    check(
        "GET bin",
        &cli(pw, false, &["--raw", "GET", "cli:bin"], b""),
        &|o| o == want,
    )?;
    log.push_str("ok binary_values\n");
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 256) as u8).collect();
    check(
        "SET 1 MiB",
        &cli(pw, false, &["-x", "SET", "cli:big"], &big),
        &|o| trimmed(o) == "OK",
    )?;
    let want = [big.as_slice(), b"\n"].concat();
    check(
        "GET 1 MiB",
        &cli(pw, false, &["--raw", "GET", "cli:big"], b""),
        &|o| o == want,
    )?;
    log.push_str("ok one_mib_value\n");
    let mut pipe = Vec::new();
    for i in 0..1000 {
        let (k, v) = (format!("cli:p{i}"), i.to_string());
        pipe.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    check("--pipe", &cli(pw, false, &["--pipe"], &pipe), &|o| {
        String::from_utf8_lossy(o).contains("errors: 0, replies: 1000")
    })?;
    check(
        "GET piped",
        &cli(pw, false, &["GET", "cli:p999"], b""),
        &|o| trimmed(o) == "999",
    )?;
    log.push_str("ok pipeline_1000\n");
    check(
        "MSET",
        &cli(pw, false, &["MSET", "cli:m1", "a", "cli:m2", "b"], b""),
        &|o| trimmed(o) == "OK",
    )?;
    check(
        "MGET",
        &cli(pw, false, &["MGET", "cli:m1", "cli:m2", "cli:none"], b""),
        &|o| trimmed(o) == "a\nb",
    )?;
    log.push_str("ok mget_mset\n");
    // Commands on stdin run on one connection, one per line.
    check(
        "unknown command",
        &cli(pw, false, &[], b"NOSUCHCMD x\nPING\n"),
        &|o| {
            let s = String::from_utf8_lossy(o).to_lowercase();
            s.contains("nosuchcmd") && s.trim_end().ends_with("pong")
        },
    )?;
    log.push_str("ok unknown_command\n");
    check(
        "AUTH wrong",
        &cli(Some("wrong"), false, &["GET", "cli:m1"], b""),
        &|o| String::from_utf8_lossy(o).contains("WRONGPASS"),
    )
    .or_else(|_| {
        // redis-cli prints an AUTH failure on stderr.
        let out = cli(Some("wrong"), false, &["GET", "cli:m1"], b"");
        if text(&out).contains("WRONGPASS") {
            Ok(())
        } else {
            Err(format!("redis-cli wrong password: {}", text(&out)))
        }
    })?;
    check(
        "no AUTH",
        &cli(None, false, &["GET", "cli:m1"], b""),
        &|o| String::from_utf8_lossy(o).contains("NOAUTH"),
    )?;
    log.push_str("ok auth_ok_and_failure\n");
    check(
        "TLS SET",
        &cli(pw, true, &["-x", "SET", "cli:tls"], &all),
        &|o| trimmed(o) == "OK",
    )?;
    let want = [all.as_slice(), b"\n"].concat();
    check(
        "TLS GET",
        &cli(pw, true, &["--raw", "GET", "cli:tls"], b""),
        &|o| o == want,
    )?;
    log.push_str("ok tls\n");

    // `--no-raw` prints replies as a terminal shows them (`(nil)`,
    // `(integer) -2`, `1) "a"`), so nil and an empty string differ.
    let shown = |args: &[&str]| -> Output {
        let all: Vec<&str> = std::iter::once("--no-raw")
            .chain(args.iter().copied())
            .collect();
        cli(pw, false, &all, b"")
    };
    let int = |name: &str, args: &[&str], want: std::ops::RangeInclusive<i64>| {
        let out = shown(args);
        let got = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("(integer) ")
            .and_then(|v| v.parse::<i64>().ok());
        match got {
            Some(v) if out.status.success() && want.contains(&v) => Ok(()),
            _ => Err(format!(
                "redis-cli {name}: want {want:?}, got {}",
                text(&out)
            )),
        }
    };
    let is = |want: &'static str| move |o: &[u8]| String::from_utf8_lossy(o).trim() == want;
    check(
        "SET EX",
        &cli(pw, false, &["SET", "cli:ttl", "v", "EX", "100"], b""),
        &is("OK"),
    )?;
    int("TTL", &["TTL", "cli:ttl"], 1..=100)?;
    int("PTTL", &["PTTL", "cli:ttl"], 1..=100_000)?;
    int("PEXPIRE", &["PEXPIRE", "cli:ttl", "300"], 1..=1)?;
    int("PTTL after PEXPIRE", &["PTTL", "cli:ttl"], 1..=300)?;
    std::thread::sleep(Duration::from_secs(1));
    check("GET expired", &shown(&["GET", "cli:ttl"]), &is("(nil)"))?;
    int("TTL expired", &["TTL", "cli:ttl"], -2..=-2)?;
    int("PTTL expired", &["PTTL", "cli:ttl"], -2..=-2)?;
    check(
        "SETEX",
        &cli(pw, false, &["SETEX", "cli:setex", "100", "w"], b""),
        &is("OK"),
    )?;
    int("TTL after SETEX", &["TTL", "cli:setex"], 1..=100)?;
    int("PERSIST", &["PERSIST", "cli:setex"], 1..=1)?;
    int("TTL after PERSIST", &["TTL", "cli:setex"], -1..=-1)?;
    int("PERSIST without expiry", &["PERSIST", "cli:setex"], 0..=0)?;
    check(
        "GET after PERSIST",
        &cli(pw, false, &["GET", "cli:setex"], b""),
        &is("w"),
    )?;
    int(
        "EXPIRE missing",
        &["EXPIRE", "cli:ttl-missing", "100"],
        0..=0,
    )?;
    int("TTL missing", &["TTL", "cli:ttl-missing"], -2..=-2)?;
    log.push_str("ok expiry\n");

    // Writer processes run at once, each a session of HSETs of its own
    // fields of one hash on its own connection.
    let (writers, fields) = (4usize, 50usize);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let input: String = (0..fields)
                    .map(|f| format!("HSET cli:hash w{w}f{f} {w}:{f}\n"))
                    .collect();
                s.spawn(move || cli(pw, false, &[], input.as_bytes()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (w, out) in outs.iter().enumerate() {
        check(&format!("HSET writer {w}"), out, &|o| {
            let s = String::from_utf8_lossy(o);
            s.lines().count() == fields && s.lines().all(|l| l.trim() == "1")
        })?;
    }
    let want: HashMap<String, String> = (0..writers)
        .flat_map(|w| (0..fields).map(move |f| (format!("w{w}f{f}"), format!("{w}:{f}"))))
        .collect();
    check(
        "HGETALL",
        &cli(pw, false, &["HGETALL", "cli:hash"], b""),
        &|o| {
            let s = String::from_utf8_lossy(o);
            let lines: Vec<&str> = s.lines().collect();
            let got: HashMap<String, String> = lines
                .chunks(2)
                .map(|p| (p[0].to_owned(), p.get(1).unwrap_or(&"").to_string()))
                .collect();
            lines.len() == 2 * want.len() && got == want
        },
    )?;
    let total = i64::try_from(writers * fields).unwrap();
    int("HLEN", &["HLEN", "cli:hash"], total..=total)?;
    int("HDEL", &["HDEL", "cli:hash", "w0f0"], 1..=1)?;
    int("HEXISTS deleted", &["HEXISTS", "cli:hash", "w0f0"], 0..=0)?;
    int("HEXISTS", &["HEXISTS", "cli:hash", "w1f0"], 1..=1)?;
    int(
        "HLEN after HDEL",
        &["HLEN", "cli:hash"],
        total - 1..=total - 1,
    )?;
    check(
        "HMGET",
        &shown(&["HMGET", "cli:hash", "w1f1", "w0f0", "nofield"]),
        &is("1) \"1:1\"\n2) (nil)\n3) (nil)"),
    )?;
    check(
        "TYPE hash",
        &cli(pw, false, &["TYPE", "cli:hash"], b""),
        &is("hash"),
    )?;
    check(
        "SET plain",
        &cli(pw, false, &["SET", "cli:plain", "x"], b""),
        &is("OK"),
    )?;
    check(
        "TYPE string",
        &cli(pw, false, &["TYPE", "cli:plain"], b""),
        &is("string"),
    )?;
    check(
        "TYPE missing",
        &cli(pw, false, &["TYPE", "cli:type-missing"], b""),
        &is("none"),
    )?;
    log.push_str("ok hashes_concurrent\n");

    let mut pipe = Vec::new();
    for i in 0..10_000 {
        let k = format!("cli:scan:{i}");
        pipe.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$1\r\ns\r\n", k.len()).as_bytes(),
        );
    }
    check("--pipe 10,000", &cli(pw, false, &["--pipe"], &pipe), &|o| {
        String::from_utf8_lossy(o).contains("errors: 0, replies: 10000")
    })?;
    // `--scan` pages through SCAN (redis-cli 7.0 sends no COUNT, so pages
    // of 10); with `--no-raw` every key is one quoted line.
    let lines = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim_matches('"').to_owned())
            .collect()
    };
    let out = shown(&["--scan", "--pattern", "cli:scan:*"]);
    let scanned = lines(&out);
    let distinct: HashSet<&String> = scanned.iter().collect();
    let all_there = (0..10_000).all(|i| distinct.contains(&format!("cli:scan:{i}")));
    if !out.status.success() || scanned.len() != 10_000 || distinct.len() != 10_000 || !all_there {
        return Err(format!(
            "redis-cli --scan --pattern cli:scan:* listed {} keys, {} distinct ({})",
            scanned.len(),
            distinct.len(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // DBSIZE is an estimate: within 10% of what a full scan counts (the
    // sessions run one after another, so nothing writes meanwhile).
    let size_out = shown(&["DBSIZE"]);
    let size = String::from_utf8_lossy(&size_out.stdout)
        .trim()
        .strip_prefix("(integer) ")
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or_else(|| format!("redis-cli DBSIZE: {}", text(&size_out)))?;
    let every = lines(&shown(&["--scan"])).len();
    if every < 10_000 || size.abs_diff(every) > every / 10 {
        return Err(format!(
            "redis-cli: DBSIZE {size}, --scan listed {every} keys"
        ));
    }
    let mut mset = vec!["MSET"];
    let few: Vec<String> = (0..10).map(|i| format!("cli:keys:{i}")).collect();
    for k in &few {
        mset.extend([k.as_str(), "k"]);
    }
    check("MSET", &cli(pw, false, &mset, b""), &is("OK"))?;
    let out = cli(pw, false, &["KEYS", "cli:keys:*"], b"");
    let mut listed = lines(&out);
    listed.sort();
    let mut sorted = few.clone();
    sorted.sort();
    if listed != sorted {
        return Err(format!("redis-cli KEYS cli:keys:*: {}", text(&out)));
    }
    log.push_str("ok scan_10000\n");
    Ok(log)
}

/// A short `redis-benchmark` run (plaintext, pipelined, and over TLS) that
/// must finish with every request answered and no error.
fn redis_benchmark(n: &Nodes) -> Result<String, String> {
    let bin = tool("redis-benchmark")?;
    let mut log = String::new();
    for (label, tls, extra) in [
        ("plain", false, &[][..]),
        ("pipelined", false, &["-P", "16"][..]),
        ("tls", true, &[][..]),
    ] {
        let mut c = Command::new(&bin);
        c.args(["-h", "127.0.0.1", "--user", USER, "-a", PASSWORD]);
        if tls {
            c.args(["-p", &n.tls_port.to_string(), "--tls", "--cacert"])
                .arg(&n.ca);
        } else {
            c.args(["-p", &n.port.to_string()]);
        }
        c.args([
            "-n",
            "2000",
            "-c",
            "4",
            "-r",
            "1000",
            "-q",
            "-t",
            "set,get,mset,ping",
        ])
        .args(extra);
        let start = Instant::now();
        let out = run_for(c, b"", SESSION_LIMIT);
        let all = text(&out);
        let lines: Vec<&str> = all
            .split(['\r', '\n'])
            .filter(|l| l.contains("requests per second"))
            .collect();
        let bad = all.to_lowercase().contains("error");
        if !out.status.success() || bad || lines.len() < 4 {
            return Err(format!("redis-benchmark {label} failed:\n{all}"));
        }
        log.push_str(&format!(
            "{label} ({:.1} s): {}\n",
            start.elapsed().as_secs_f64(),
            lines.join("; ")
        ));
    }
    Ok(log)
}

#[test]
fn every_real_client_passes_its_session() {
    if std::env::var_os("CASSIO_SKIP_REAL_CLIENTS").is_some_and(|v| v == "1") {
        eprintln!("CASSIO_SKIP_REAL_CLIENTS=1: the real-client matrix is skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path());
    type Session = (&'static str, Box<dyn Fn(&Nodes) -> Result<String, String>>);
    let sessions: Vec<Session> = vec![
        (
            "redis-py (default protocol)",
            Box::new(|n| redis_py(n, None)),
        ),
        ("redis-py protocol=2", Box::new(|n| redis_py(n, Some(2)))),
        ("redis-py protocol=3", Box::new(|n| redis_py(n, Some(3)))),
        ("redis crate", Box::new(rust_redis)),
        ("ioredis", Box::new(|n| node_client(n, "ioredis"))),
        ("node-redis", Box::new(|n| node_client(n, "redis"))),
        ("redis-cli", Box::new(redis_cli)),
        ("redis-benchmark", Box::new(redis_benchmark)),
    ];
    let mut failures = Vec::new();
    for (name, session) in &sessions {
        let start = Instant::now();
        match session(&nodes) {
            Ok(log) => eprintln!(
                "== {name}: passed in {:.1} s\n{log}",
                start.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("== {name}: FAILED\n{e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} real-client sessions failed:\n{}",
        failures.len(),
        sessions.len(),
        failures.join("\n")
    );
}
