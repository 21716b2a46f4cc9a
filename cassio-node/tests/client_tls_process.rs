//! A real `cassio` process with users and TLS on its client ports, driven
//! by the tools users have: `cassio gen-certs --client` and
//! `cassio hash-password` to set it up, `redis-cli --tls`, `curl --cacert`
//! and the `cassio` CLI over TLS with a user; and `cassio start` refusing a
//! client port off loopback without users.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{start_node, BIN};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with `stdin`, killing it past 20 s.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    {
        let mut i = child.stdin.take().unwrap();
        i.write_all(stdin).unwrap();
    }
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cassio(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

fn hash(secret: &str) -> String {
    let out = run(cassio(&["hash-password"]), format!("{secret}\n").as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    let h = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert!(!h.contains(secret));
    h
}

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing (.ci/run installs redis-tools; curl is in the base image)"
    );
    path
}

fn redis_cli(ca: &Path, port: u16, auth: Option<(&str, &str)>, cmd: &[&str]) -> String {
    let mut c = Command::new(tool("redis-cli"));
    c.args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((u, p)) = auth {
        c.args(["--user", u, "--pass", p, "--no-auth-warning"]);
    }
    c.args(cmd);
    text(&run(c, b""))
}

/// `curl` over TLS; returns the status code and the body.
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let mut c = Command::new(tool("curl"));
    c.args(["-sS", "--max-time", "15", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(url);
    let out = run(c, b"");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_owned(), body.to_owned())
}

#[test]
fn tls_and_users_with_redis_cli_curl_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("certs");
    let out = run(
        cassio(&[
            "gen-certs",
            "--dir",
            &certs.display().to_string(),
            "--nodes",
            "1",
            "--client",
        ]),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("client ports:"), "{}", text(&out));
    let ca = certs.join("ca.pem");
    let config = dir.join("cassio.toml");
    std::fs::write(
        &config,
        format!(
            r#"client_tls_cert = "{cert}"
client_tls_key = "{key}"

[[users]]
name = "alice"
password_hash = "{alice}"
token_hash = "{token}"
access = "read-write"
admin = true

[[users]]
name = "reader"
password_hash = "{reader}"
access = "read-only"
"#,
            cert = certs.join("client.pem").display(),
            key = certs.join("client.key").display(),
            alice = hash("alice-pw"),
            token = hash("alice-token"),
            reader = hash("reader-pw"),
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--data-dir",
        &dir.join("data").display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--client-addr",
        "127.0.0.1:0",
        "--resp-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut node, ready) = start_node("tls", dir, &args);
    let resp = ready.resp.unwrap().port();
    let http = ready.http.unwrap();

    // redis-cli over TLS.
    let set = redis_cli(&ca, resp, Some(("alice", "alice-pw")), &["SET", "k", "v"]);
    assert_eq!(set.trim(), "OK", "{set}");
    let get = redis_cli(&ca, resp, Some(("reader", "reader-pw")), &["GET", "k"]);
    assert_eq!(get.trim(), "v", "{get}");
    let wrong = redis_cli(&ca, resp, Some(("alice", "bad")), &["GET", "k"]);
    assert!(wrong.contains("WRONGPASS"), "{wrong}");
    let anon = redis_cli(&ca, resp, None, &["GET", "k"]);
    assert!(anon.contains("NOAUTH"), "{anon}");
    let ro = redis_cli(&ca, resp, Some(("reader", "reader-pw")), &["SET", "k", "w"]);
    assert!(ro.contains("NOPERM"), "{ro}");
    // Plaintext to the TLS port gets no answer.
    let mut plain = Command::new(tool("redis-cli"));
    plain.args(["-h", "127.0.0.1", "-p", &resp.to_string(), "PING"]);
    let plain = text(&run(plain, b""));
    assert!(
        !plain.contains("PONG") && !plain.contains("NOAUTH"),
        "{plain}"
    );

    // curl over TLS: Basic, Bearer, a wrong password.
    let url = format!("https://127.0.0.1:{}/kv/k", http.port());
    assert_eq!(
        curl(&ca, &url, &["-u", "alice:alice-pw"]),
        ("200".into(), "v".into())
    );
    assert_eq!(
        curl(
            &ca,
            &url,
            &["-H", "Authorization: Bearer alice:alice-token"]
        ),
        ("200".into(), "v".into())
    );
    let (code, body) = curl(&ca, &url, &["-u", "alice:bad"]);
    assert_eq!(code, "401", "{body}");
    let (code, _) = curl(
        &ca,
        &url,
        &["-u", "reader:reader-pw", "-X", "PUT", "-d", "w"],
    );
    assert_eq!(code, "403");
    let health = format!("https://127.0.0.1:{}/health", http.port());
    assert_eq!(curl(&ca, &health, &[]).0, "200");

    // The cassio CLI (native protocol) over TLS with a user.
    let node_addr = ready.client.to_string();
    let tls_args = [
        "--node",
        &node_addr,
        "--tls-ca",
        &ca.display().to_string(),
        "--tls-server-name",
        "127.0.0.1",
    ]
    .map(str::to_owned);
    let mut get = cassio(&["get", "k", "--user", "alice"]);
    get.args(&tls_args).env("CASSIO_PASSWORD", "alice-pw");
    let out = run(get, b"");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
    let mut set = cassio(&["set", "k", "w", "--user", "reader"]);
    set.args(&tls_args).env("CASSIO_PASSWORD", "reader-pw");
    let out = run(set, b"");
    assert!(!out.status.success());
    assert!(text(&out).contains("may not write"), "{}", text(&out));
    let mut anon = cassio(&["get", "k"]);
    anon.args(&tls_args).env_remove("CASSIO_USER");
    let out = run(anon, b"");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("authentication required"),
        "{}",
        text(&out)
    );

    let status = node.terminate_within(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_client_port_off_loopback_needs_users_or_insecure_no_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let out = run(
        cassio(&[
            "start",
            "--data-dir",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--client-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            // Refused while reading the settings, before anything binds.
            "--resp-addr",
            "0.0.0.0:0",
        ]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("resp_addr") && msg.contains("insecure_no_auth") && msg.contains("[[users]]"),
        "{msg}"
    );
    // An empty password is refused too.
    let out = run(cassio(&["hash-password"]), b"\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
