//! The real-client matrix (issue 14): the clients Redis users have, each in
//! a session against real `cassio start` processes on free loopback ports.
//!
//! Two single-node clusters are started, both with a users file (`cassio
//! hash-password`): one plaintext RESP port, one with `--client-tls-cert` /
//! `--client-tls-key` from `cassio gen-certs --client`. Every session checks
//! get/set/del, all 256 byte values, a 1 MiB value, a pipeline of 1,000
//! commands, MGET/MSET, AUTH success and failure, TLS, and an unknown
//! command's error naming it on a connection that stays usable:
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
//! A later check (expiry, hashes, SCAN) is one more function in each script
//! and here, and one more name in `CHECKS`.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{start_node, Proc, BIN};
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
