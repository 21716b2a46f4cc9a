//! Starting real `cassio` processes for the process tests
//! (`cluster_process.rs`, `console.rs`): a node's ready line, a child that
//! is killed when dropped, three-node clusters on free loopback ports,
//! `cassio status` polled until a condition holds.
//!
//! Every port is chosen by the OS (the node prints what it bound), every
//! wait is bounded, and every child is killed when its guard drops.

// Test helpers: a failed unwrap is a failed test; each test binary uses
// only some of them.
#![allow(dead_code, clippy::unwrap_used)]

use cassio_node::ClusterStatus;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cassio");

/// `n` distinct loopback ports that are free now and lie below the
/// kernel's ephemeral range, for configs that must name their ports before
/// the node starts (seeds, unit files).
///
/// Ports from `bind(127.0.0.1:0)` come from the ephemeral range, and once
/// released the kernel may hand the same port to any outgoing connection
/// (one node dialling its seeds) before the node meant to listen on it
/// binds: CI saw exactly that as `Address already in use`. Ports below the
/// range are never chosen for outgoing connections; every candidate is held
/// bound until all `n` are found, so none is returned twice.
pub fn reserved_ports(n: usize) -> Vec<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = 10_000u16;
    assert!(low > floor + 1000, "ephemeral range starts at {low}");
    let span = u32::from(low - floor);
    // A start that differs between test binaries and runs, so concurrent
    // tests rarely probe the same ports.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut held = Vec::new();
    for i in 0..span {
        if held.len() == n {
            break;
        }
        let port = floor + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "not enough free ports below {low}");
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// What a node printed once it was ready.
#[derive(Clone, Debug)]
pub struct Ready {
    pub id: u64,
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub resp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub generation: u64,
}

pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix("cassio: node ")?;
    let (id, rest) = rest.split_once(' ')?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    let opt = |name: &str| field(name).and_then(|v| v.parse().ok());
    Some(Ready {
        id: id.parse().ok()?,
        peer: field("peer")?.parse().ok()?,
        client: field("client")?.parse().ok()?,
        resp: opt("resp"),
        http: opt("http"),
        generation: field("generation")?.parse().ok()?,
    })
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(20))
    }

    /// Sends SIGTERM (to this child's pid only) and waits up to `limit`
    /// for it to exit.
    pub fn terminate_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.exit_within(limit)
    }

    /// Waits up to `limit` for the child to exit on its own.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cassio start ARGS` and waits (bounded) for its ready line.
pub fn start_node(name: &str, dir: &Path, args: &[String]) -> (Proc, Ready) {
    start_node_as(name, dir, "start", args)
}

/// [`start_node`] with another subcommand that runs a node (`replace`).
pub fn start_node_as(name: &str, dir: &Path, subcommand: &str, args: &[String]) -> (Proc, Ready) {
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut child = Command::new(BIN)
        .arg(subcommand)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut proc = Proc {
        name: name.to_owned(),
        child,
        log,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(r) = parse_ready(&line) {
                    return (proc, r);
                }
            }
            Err(_) => {
                let status = proc.child.try_wait().ok().flatten();
                let log = proc.log_text();
                proc.kill();
                panic!("{name} never became ready (exit: {status:?}); log:\n{log}");
            }
        }
    }
}

pub fn cli(args: &[&str]) -> std::process::Output {
    cli_as(None, args)
}

/// A user and password for nodes with users (`CASSIO_USER`, `CASSIO_PASSWORD`).
pub type Credentials<'a> = Option<(&'a str, &'a str)>;

/// `cli` logged in as `creds` (the CLI reads them from its environment).
pub fn cli_as(creds: Credentials<'_>, args: &[&str]) -> std::process::Output {
    // The CLI's own client timeouts bound this call.
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    if let Some((user, password)) = creds {
        cmd.env("CASSIO_USER", user)
            .env("CASSIO_PASSWORD", password);
    }
    cmd.output().unwrap()
}

pub fn status_of(client: SocketAddr) -> Option<ClusterStatus> {
    status_of_as(None, client)
}

/// `status_of` logged in as `creds`.
pub fn status_of_as(creds: Credentials<'_>, client: SocketAddr) -> Option<ClusterStatus> {
    let out = cli_as(
        creds,
        &[
            "status",
            "--json",
            "--node",
            &client.to_string(),
            "--timeout-ms",
            "2000",
        ],
    );
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `cassio status` on `client` until `ok` holds; panics after `limit`.
pub fn wait_status(
    what: &str,
    client: SocketAddr,
    limit: Duration,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    wait_status_as(None, what, client, limit, ok)
}

/// `wait_status` logged in as `creds`.
pub fn wait_status_as(
    creds: Credentials<'_>,
    what: &str,
    client: SocketAddr,
    limit: Duration,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(s) = status_of_as(creds, client) {
            if ok(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn all_normal_and_up(s: &ClusterStatus, n: usize) -> bool {
    s.members.len() == n && s.members.iter().all(|m| m.up && m.state == "Normal")
}

/// The text of an HTTP/1.1 request to `addr` that closes its connection,
/// with extra `headers` (each line ending in `\r\n`).
fn request_text(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A response's status code and body, each if it has one.
fn split_response(resp: &str) -> (Option<u16>, Option<String>) {
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (code, body)
}

/// An HTTP request over a raw socket with extra `headers` (each line
/// ending in `\r\n`) that tolerates a node that is gone: `None` when it
/// cannot connect or the answer does not come within 10 s (the outcome is
/// then unknown).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request_text(addr, method, path, headers, body).as_bytes())
        .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    match split_response(&resp) {
        (Some(code), Some(body)) => Some((code, body)),
        _ => None,
    }
}

/// An HTTP request over a raw socket; returns (status code, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request_text(addr, method, path, "", body).as_bytes())
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (code, body) = split_response(&resp);
    (code.unwrap_or(0), body.unwrap_or_default())
}

pub struct Scenario {
    pub name: &'static str,
    pub transport: &'static str,
    pub store: &'static str,
}

pub fn node_args(
    sc: &Scenario,
    dir: &Path,
    i: usize,
    seed: Option<SocketAddr>,
    ports: Option<&Ready>,
) -> Vec<String> {
    // A first start takes ports below the ephemeral range (see
    // `reserved_ports`), so a restart on the same ports cannot find one
    // taken by another node's outgoing connection meanwhile.
    let fresh = if ports.is_none() {
        reserved_ports(4)
    } else {
        Vec::new()
    };
    let mut fresh = fresh.into_iter();
    let mut addr = |a: Option<SocketAddr>| match (a, fresh.next()) {
        (Some(a), _) => a.to_string(),
        (None, Some(p)) => format!("127.0.0.1:{p}"),
        (None, None) => "127.0.0.1:0".to_string(),
    };
    let mut a: Vec<String> = [
        "--cluster",
        sc.name,
        "--data-dir",
        &dir.join(format!("node{i}")).display().to_string(),
        "--replication-factor",
        "3",
        "--store",
        sc.store,
        "--transport",
        sc.transport,
        "--gossip-interval-ms",
        "250",
        "--request-timeout-ms",
        "3000",
        "--vnodes",
        "32",
        "--listen",
        &addr(ports.map(|r| r.peer)),
        "--client-addr",
        &addr(ports.map(|r| r.client)),
        "--resp-addr",
        &addr(ports.and_then(|r| r.resp)),
        "--http-addr",
        &addr(ports.and_then(|r| r.http)),
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(s) = seed {
        a.push("--seeds".into());
        a.push(s.to_string());
    }
    if sc.transport == "quic" {
        let certs = dir.join("certs");
        a.extend([
            "--tls-ca".to_string(),
            certs.join("ca.pem").display().to_string(),
            "--tls-cert".to_string(),
            certs.join(format!("node{i}.pem")).display().to_string(),
            "--tls-key".to_string(),
            certs.join(format!("node{i}.key")).display().to_string(),
        ]);
    }
    a
}

/// Starts nodes 1 to 3 (node 1 the seed) with `node_args` as `edit` changes
/// them, and waits until each sees three Normal members.
pub fn start_three(
    sc: &Scenario,
    dir: &Path,
    edit: impl Fn(usize, &mut Vec<String>),
) -> Vec<(Proc, Ready)> {
    let mut nodes: Vec<(Proc, Ready)> = Vec::new();
    for i in 1..=3 {
        let seed = nodes.first().map(|(_, r)| r.peer);
        let mut args = node_args(sc, dir, i, seed, None);
        edit(i, &mut args);
        nodes.push(start_node(&format!("node{i}"), dir, &args));
    }
    for (_, r) in &nodes {
        wait_status(
            "three Normal nodes",
            r.client,
            Duration::from_secs(30),
            |s| all_normal_and_up(s, 3),
        );
    }
    nodes
}
