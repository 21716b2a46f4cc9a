//! The multi-host nemesis: five (then six) `cassio` hosts, each in its own
//! Linux network namespace, joined by veth pairs to a bridge in the root
//! namespace, with mutual TLS between peers and RF 3. Clients in this
//! process (outside the namespaces) write, read and delete at QUORUM over
//! HTTP while a nemesis degrades links (`tc netem`, or where the kernel has
//! no netem, `tc tbf` plus nftables random loss), partitions the hosts with
//! nftables (minority, majority, bridge), SIGKILLs and restarts nodes,
//! SIGSTOPs and SIGCONTs them, joins a sixth host and decommissions it.
//! Then everything heals, the cluster converges, every key is read once
//! more, and the recorded history (JSON lines, its path printed) is judged
//! by `conformance::real_history`.
//!
//! A second, shorter run starts the nodes with a failpoint that makes
//! replicas acknowledge writes they dropped (`storage-apply-drop`, compiled
//! in by the `failpoints` feature); the checker must find violations there,
//! and none in the first run.
//!
//! Needs root (namespaces, veths, nftables): `.ci/run` runs it explicitly.
//! `CASSIO_NETNS_MINUTES` sets the length of the fault schedule (default
//! 2); `CASSIO_NETNS_KEEP=1` keeps the temporary directory (logs, history).
//!
//! Every name (namespaces, links) carries this process's pid, so parallel
//! runs never collide; leftovers of dead runs are removed at start; a Drop
//! guard kills every process it started (by pid) and deletes every
//! namespace and link, after a failure or panic too.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod process_common;

use conformance::real_history::{check_history_file, Op, Outcome, Record, Report};
use process_common::{parse_ready, status_of, Proc, Ready, BIN};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Hosts started at once; one more joins during the schedule.
const HOSTS: usize = 5;
const JOINER: usize = HOSTS + 1;
/// Keys the clients share: few, so that operations on a key overlap.
const KEYS: u32 = 12;
const CLIENTS: u32 = 4;
/// Prefix of every namespace and link name (then the pid).
const PREFIX: &str = "cnn";

/// Runs a command; an error carries its stderr.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_ok(cmd: &str, args: &[&str]) {
    if let Err(e) = run(cmd, args) {
        panic!("{e}");
    }
}

fn stdout_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The namespaces, veths and bridge of one run; deleted when dropped.
struct Net {
    pid: u32,
    /// The first three octets of the hosts' /24.
    subnet: String,
    /// Whether the kernel has `sch_netem`.
    netem: bool,
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("{PREFIX}{}h{i}", self.pid)
    }
    fn veth(&self, i: usize) -> String {
        format!("{PREFIX}{}v{i}", self.pid)
    }
    fn bridge(&self) -> String {
        format!("{PREFIX}{}br", self.pid)
    }
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// Deletes namespaces and links named `cnn<pid>...` whose pid is ours
    /// or no longer runs (leftovers of a run killed before its cleanup).
    fn remove_leftovers(own: u32) {
        let stale = |name: &str| -> bool {
            let Some(rest) = name.strip_prefix(PREFIX) else {
                return false;
            };
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            match digits.parse::<u32>() {
                Ok(pid) => pid == own || !Path::new(&format!("/proc/{pid}")).exists(),
                Err(_) => false,
            }
        };
        for line in stdout_of("ip", &["-o", "link", "show"]).lines() {
            // "7: cnn123v1@if2: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if stale(name) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
        for line in stdout_of("ip", &["netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if stale(name) {
                // Nodes of a run that was itself killed outlive it inside
                // its namespace: only this test starts processes there.
                for pid in stdout_of("ip", &["netns", "pids", name]).split_whitespace() {
                    let _ = run("kill", &["-KILL", pid]);
                }
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }

    /// Creates `hosts` namespaces, each with its veth on the bridge.
    fn create(hosts: usize) -> Net {
        let pid = std::process::id();
        Net::remove_leftovers(pid);
        let subnet = format!("10.{}.{}", 200 + (pid >> 8) % 50, pid % 256);
        let mut net = Net {
            pid,
            subnet,
            netem: false,
        };
        let br = net.bridge();
        run_ok("ip", &["link", "add", &br, "type", "bridge"]);
        let br_addr = format!("{}.1/24", net.subnet);
        run_ok("ip", &["addr", "add", &br_addr, "dev", &br]);
        run_ok("ip", &["link", "set", &br, "up"]);
        for i in 1..=hosts {
            let (ns, veth) = (net.ns(i), net.veth(i));
            run_ok("ip", &["netns", "add", &ns]);
            run_ok(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            run_ok("ip", &["link", "set", &veth, "master", &br, "up"]);
            let addr = format!("{}/24", net.ip(i));
            for args in [
                vec!["link", "set", "lo", "up"],
                vec!["addr", "add", &addr, "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
            ] {
                let mut full = vec!["netns", "exec", &ns, "ip"];
                full.extend(args);
                run_ok("ip", &full);
            }
        }
        // Is netem there? (Some kernels, this CI's VM among them, lack it.)
        let probe = net.veth(1);
        net.netem = run(
            "tc",
            &[
                "qdisc", "add", "dev", &probe, "root", "netem", "delay", "1ms",
            ],
        )
        .is_ok();
        let _ = run("tc", &["qdisc", "del", "dev", &probe, "root"]);
        net
    }

    /// `nft` inside host `i`'s namespace.
    fn nft(&self, i: usize, script: &str) -> Result<(), String> {
        run("ip", &["netns", "exec", &self.ns(i), "nft", script])
    }

    /// Host `i` drops every packet from and to `peers` (peer traffic only:
    /// clients, on the bridge's address, still reach it).
    fn cut(&self, i: usize, peers: &[usize]) {
        let set: Vec<String> = peers.iter().map(|&p| self.ip(p)).collect();
        let set = set.join(", ");
        let script = format!(
            "add table inet cut\n\
             add chain inet cut input {{ type filter hook input priority 0; policy accept; }}\n\
             add chain inet cut output {{ type filter hook output priority 0; policy accept; }}\n\
             add rule inet cut input ip saddr {{ {set} }} drop\n\
             add rule inet cut output ip daddr {{ {set} }} drop"
        );
        self.nft_script(i, &script);
    }

    fn nft_script(&self, i: usize, script: &str) {
        let path = std::env::temp_dir().join(format!("{PREFIX}{}-h{i}.nft", self.pid));
        std::fs::write(&path, script).unwrap();
        run_ok(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns(i),
                "nft",
                "-f",
                &path.display().to_string(),
            ],
        );
        let _ = std::fs::remove_file(path);
    }

    /// Degrades the link to host `i`: delay, jitter, loss and reordering
    /// with netem; without it, a slow token bucket (queueing delay, tail
    /// drops) and 5% random loss in both directions (nftables).
    fn degrade(&self, i: usize) -> &'static str {
        let veth = self.veth(i);
        if self.netem {
            run_ok(
                "tc",
                &[
                    "qdisc", "add", "dev", &veth, "root", "netem", "delay", "40ms", "20ms", "loss",
                    "5%", "reorder", "25%", "50%",
                ],
            );
            "link_netem"
        } else {
            run_ok(
                "tc",
                &[
                    "qdisc", "add", "dev", &veth, "root", "tbf", "rate", "4mbit", "burst",
                    "16kbit", "latency", "100ms",
                ],
            );
            self.nft_script(
                i,
                "add table inet loss\n\
                 add chain inet loss input { type filter hook input priority 0; policy accept; }\n\
                 add chain inet loss output { type filter hook output priority 0; policy accept; }\n\
                 add rule inet loss input numgen random mod 100 < 5 drop\n\
                 add rule inet loss output numgen random mod 100 < 5 drop",
            );
            "link_tbf_loss"
        }
    }

    /// Removes every rule and qdisc the nemesis added to host `i`.
    fn heal(&self, i: usize) {
        let _ = run("tc", &["qdisc", "del", "dev", &self.veth(i), "root"]);
        let _ = self.nft(i, "delete table inet cut");
        let _ = self.nft(i, "delete table inet loss");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::remove_leftovers(self.pid);
    }
}

/// One host's `cassio` process.
struct Host {
    proc: Proc,
    ready: Ready,
    args: Vec<String>,
    paused: bool,
}

impl Host {
    fn pid(&self) -> String {
        self.proc.child.id().to_string()
    }
}

/// The hosts and their network: processes are killed first (by pid,
/// continued first if paused), then the network is deleted.
struct Cluster {
    hosts: BTreeMap<usize, Host>,
    net: Net,
    dir: PathBuf,
    failpoints: Option<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in self.hosts.values_mut() {
            if h.paused {
                let _ = run("kill", &["-CONT", &h.pid()]);
            }
            h.proc.kill();
        }
    }
}

impl Cluster {
    fn http(&self, i: usize) -> String {
        format!("{}:8080", self.net.ip(i))
    }

    fn args(&self, i: usize) -> Vec<String> {
        let ip = self.net.ip(i);
        let certs = self.dir.join("certs");
        let mut a: Vec<String> = vec![
            "--cluster".into(),
            "nemesis".into(),
            "--data-dir".into(),
            self.dir.join(format!("host{i}")).display().to_string(),
            "--replication-factor".into(),
            "3".into(),
            "--transport".into(),
            "tcp".into(),
            "--gossip-interval-ms".into(),
            "250".into(),
            "--request-timeout-ms".into(),
            "2000".into(),
            "--vnodes".into(),
            "32".into(),
            "--listen".into(),
            format!("{ip}:7000"),
            "--client-addr".into(),
            format!("{ip}:7379"),
            "--resp-addr".into(),
            "off".into(),
            "--http-addr".into(),
            format!("{ip}:8080"),
            "--tls-ca".into(),
            certs.join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            certs.join(format!("node{i}.pem")).display().to_string(),
            "--tls-key".into(),
            certs.join(format!("node{i}.key")).display().to_string(),
            "--log-level".into(),
            "info".into(),
            // The client port is off loopback, inside namespaces only this
            // test reaches: no users (client auth has tests of its own).
            "--insecure-no-auth".into(),
        ];
        if i != 1 {
            a.push("--seeds".into());
            a.push(format!("{}:7000", self.net.ip(1)));
        }
        a
    }

    /// Starts `cassio start ARGS` in host `i`'s namespace and waits
    /// (bounded) for its ready line.
    fn spawn(&self, i: usize, args: Vec<String>) -> Host {
        let log = self.dir.join(format!("host{i}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.ns(i), BIN, "start"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        match &self.failpoints {
            Some(f) => cmd.env("FAILPOINTS", f),
            None => cmd.env_remove("FAILPOINTS"),
        };
        // `ip netns exec` execs the command: the child's pid is cassio's.
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut proc = Proc {
            name: format!("host{i}"),
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
                    if let Some(ready) = parse_ready(&line) {
                        return Host {
                            proc,
                            ready,
                            args,
                            paused: false,
                        };
                    }
                }
                Err(_) => {
                    let log = proc.log_text();
                    proc.kill();
                    panic!("host{i} never became ready; log:\n{log}");
                }
            }
        }
    }

    fn start(&mut self, i: usize) {
        let h = self.spawn(i, self.args(i));
        self.hosts.insert(i, h);
    }

    /// SIGKILL, then the same command line again on the same data.
    fn kill_and_restart(&mut self, i: usize, down: Duration) {
        let h = self.hosts.get_mut(&i).unwrap();
        h.proc.kill();
        std::thread::sleep(down);
        let args = h.args.clone();
        let h2 = self.spawn(i, args);
        self.hosts.insert(i, h2);
    }

    fn signal(&mut self, i: usize, sig: &str) {
        let h = self.hosts.get_mut(&i).unwrap();
        run_ok("kill", &[sig, &h.pid()]);
        h.paused = sig == "-STOP";
    }

    /// Waits until every running host sees exactly the running hosts as
    /// members that have not left, all up and `Normal`.
    fn wait_settled(&self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let n = self.hosts.len();
        let mut last: String;
        for h in self.hosts.values() {
            loop {
                match status_of(h.ready.client) {
                    Some(s) => {
                        let staying: Vec<_> =
                            s.members.iter().filter(|m| m.state != "Left").collect();
                        if staying.len() == n && staying.iter().all(|m| m.up && m.state == "Normal")
                        {
                            break;
                        }
                        last = format!("{:?}", s.members);
                    }
                    None => last = format!("{} does not answer", h.proc.name),
                }
                if started.elapsed() > limit {
                    return Err(format!(
                        "not settled within {limit:?} ({n} hosts); last: {last}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Ok(started.elapsed())
    }

    fn logs(&self) -> String {
        self.hosts
            .values()
            .map(|h| {
                let log = h.proc.log_text();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", h.proc.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Microseconds since the run began (a monotonic clock).
fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// One HTTP request with bounded waits: `Err(true)` when it timed out or
/// the connection broke after sending, `Err(false)` when nothing was sent.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), bool> {
    let addr: SocketAddr = addr.parse().map_err(|_| false)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|_| false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|_| false)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|_| false)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|_| true)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|_| true)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(true)?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .ok_or(true)?;
    Ok((code, body))
}

/// One operation at QUORUM, recorded.
fn operate(
    t0: Instant,
    client: u32,
    node: &str,
    op: Op,
    key: &str,
    value: Option<String>,
) -> Record {
    let path = format!("/kv/{key}?consistency=quorum");
    let invoked_us = micros(t0);
    let (method, body) = match op {
        Op::Get => ("GET", ""),
        Op::Put => ("PUT", value.as_deref().unwrap_or("")),
        Op::Delete => ("DELETE", ""),
    };
    let answer = http(node, method, &path, body);
    let completed_us = micros(t0).max(invoked_us);
    let outcome = match (op, answer) {
        (Op::Get, Ok((200, body))) => Outcome::Value(body),
        (Op::Get, Ok((404, body))) if body.contains("\"not_found\"") => Outcome::NotFound,
        (Op::Put | Op::Delete, Ok((200, _))) => Outcome::Ok,
        (_, Ok((code, body))) => {
            let code_name = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("http_{code}"));
            Outcome::Error(code_name)
        }
        (_, Err(true)) => Outcome::Timeout,
        (_, Err(false)) => Outcome::Error("no_connection".into()),
    };
    Record {
        client,
        node: node.to_owned(),
        op,
        key: key.to_owned(),
        value,
        invoked_us,
        completed_us,
        outcome,
        final_read: false,
    }
}

/// Clients issuing random puts, gets and deletes on a few keys against
/// the hosts in `targets`; stopped (and joined) when dropped.
struct Clients {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<String>>>,
    history: Arc<Mutex<Vec<Record>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(t0: Instant, targets: Vec<String>, seed: u64) -> Clients {
        let mut c = Clients {
            stop: Arc::default(),
            targets: Arc::new(Mutex::new(targets)),
            history: Arc::default(),
            threads: Vec::new(),
        };
        for client in 0..CLIENTS {
            let (stop, targets, history) = (c.stop.clone(), c.targets.clone(), c.history.clone());
            let mut rng = seed ^ (u64::from(client) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            c.threads.push(std::thread::spawn(move || {
                let mut next = move || {
                    // xorshift64*: reproducible from the printed seed.
                    rng ^= rng >> 12;
                    rng ^= rng << 25;
                    rng ^= rng >> 27;
                    rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
                };
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let node = {
                        let t = targets.lock().unwrap();
                        t[(next() % t.len() as u64) as usize].clone()
                    };
                    let key = format!("k{}", next() % u64::from(KEYS));
                    let roll = next() % 100;
                    let rec = if roll < 45 {
                        seq += 1;
                        let value = format!("c{client}-{seq}");
                        operate(t0, client, &node, Op::Put, &key, Some(value))
                    } else if roll < 90 {
                        operate(t0, client, &node, Op::Get, &key, None)
                    } else {
                        operate(t0, client, &node, Op::Delete, &key, None)
                    };
                    history.lock().unwrap().push(rec);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        c
    }

    fn set_targets(&self, t: Vec<String>) {
        *self.targets.lock().unwrap() = t;
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The figures of one run.
struct RunResult {
    history: PathBuf,
    report: Report,
    faults: BTreeMap<&'static str, u32>,
    took: Duration,
}

/// The nemesis's steps, in the order it takes them (cycling).
#[derive(Clone, Copy, Debug)]
enum Fault {
    Link,
    Minority,
    Kill,
    Pause,
    Majority,
    Join,
    Bridge,
    Decommission,
}

const SCHEDULE: [Fault; 10] = [
    Fault::Link,
    Fault::Minority,
    Fault::Join,
    Fault::Kill,
    Fault::Pause,
    Fault::Majority,
    Fault::Bridge,
    Fault::Decommission,
    Fault::Kill,
    Fault::Pause,
];

/// Runs the whole thing once: hosts up, clients and faults for
/// `fault_time` (with the join and decommission steps when `membership`),
/// heal, converge, final reads, check.
fn nemesis_run(
    name: &str,
    dir: &Path,
    fault_time: Duration,
    membership: bool,
    failpoints: Option<&str>,
) -> RunResult {
    let started = Instant::now();
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let certs = dir.join("certs");
    let out = Command::new(BIN)
        .args(["gen-certs", "--dir", &certs.display().to_string()])
        .args(["--nodes", &JOINER.to_string(), "--cluster", "nemesis"])
        .output()
        .unwrap();
    assert!(out.status.success(), "gen-certs: {out:?}");

    let net = Net::create(JOINER);
    println!(
        "[{name}] hosts {}.11-{} in namespaces {}..{} on bridge {} ({}); netem: {}",
        net.subnet,
        10 + JOINER,
        net.ns(1),
        net.ns(JOINER),
        net.bridge(),
        net.subnet,
        if net.netem {
            "yes"
        } else {
            "no (tbf and nftables loss instead)"
        }
    );
    let mut cl = Cluster {
        hosts: BTreeMap::new(),
        net,
        dir: dir.clone(),
        failpoints: failpoints.map(str::to_owned),
    };
    for i in 1..=HOSTS {
        cl.start(i);
    }
    if let Err(e) = cl.wait_settled(Duration::from_secs(90)) {
        panic!("[{name}] the cluster did not form: {e}\n{}", cl.logs());
    }
    println!(
        "[{name}] {HOSTS} hosts Normal after {:.1?}",
        started.elapsed()
    );

    let t0 = Instant::now();
    let seed = u64::from(std::process::id()) ^ 0x5EED;
    let targets = |cl: &Cluster| cl.hosts.keys().map(|&i| cl.http(i)).collect::<Vec<_>>();
    let mut clients = Clients::start(t0, targets(&cl), seed);
    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut rng = seed;
    let mut pick = move |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) % n as u64) as usize
    };
    let (mut joined, mut decommissioned) = (false, false);
    let hold = Duration::from_secs(8);
    let rest = Duration::from_secs(4);
    let fault_start = Instant::now();
    let mut step = 0;
    while fault_start.elapsed() < fault_time {
        let fault = SCHEDULE[step % SCHEDULE.len()];
        step += 1;
        // Victims among hosts 1..=5; the joiner, while in, sides with the rest.
        let mut order: Vec<usize> = (1..=HOSTS).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, pick(k + 1));
        }
        let others_of = |side: &[usize], cl: &Cluster| -> Vec<usize> {
            cl.hosts
                .keys()
                .copied()
                .filter(|h| !side.contains(h))
                .collect()
        };
        let at = fault_start.elapsed().as_secs_f64();
        let what: String = match fault {
            Fault::Link => {
                let (a, b) = (order[0], order[1]);
                let kind = cl.net.degrade(a);
                cl.net.degrade(b);
                *faults.entry(kind).or_default() += 2;
                std::thread::sleep(hold);
                format!("{kind} on hosts {a} and {b}")
            }
            Fault::Minority | Fault::Majority | Fault::Bridge => {
                let (side_a, side_b, kind): (Vec<usize>, Vec<usize>, &'static str) = match fault {
                    Fault::Minority => {
                        let a = vec![order[0]];
                        let b = others_of(&a, &cl);
                        (a, b, "partition_minority")
                    }
                    Fault::Majority => {
                        let a = vec![order[0], order[1]];
                        let b = others_of(&a, &cl);
                        (a, b, "partition_majority")
                    }
                    _ => {
                        // order[2] sees both sides; the sides do not see each other.
                        let a = vec![order[0], order[1]];
                        let mut b = others_of(&a, &cl);
                        b.retain(|&h| h != order[2]);
                        (a, b, "partition_bridge")
                    }
                };
                for &h in &side_a {
                    cl.net.cut(h, &side_b);
                }
                for &h in &side_b {
                    cl.net.cut(h, &side_a);
                }
                *faults.entry(kind).or_default() += 1;
                std::thread::sleep(hold);
                format!("{kind}: {side_a:?} | {side_b:?}")
            }
            Fault::Kill => {
                let v = order[0];
                cl.kill_and_restart(v, Duration::from_secs(4));
                *faults.entry("sigkill_restart").or_default() += 1;
                std::thread::sleep(rest);
                format!("SIGKILL host {v}, restarted 4 s later")
            }
            Fault::Pause => {
                let v = order[0];
                cl.signal(v, "-STOP");
                *faults.entry("sigstop_sigcont").or_default() += 1;
                std::thread::sleep(Duration::from_secs(6));
                cl.signal(v, "-CONT");
                format!("SIGSTOP host {v} for 6 s, then SIGCONT")
            }
            Fault::Join if membership && !joined => {
                joined = true;
                let t = Instant::now();
                cl.start(JOINER);
                if let Err(e) = cl.wait_settled(Duration::from_secs(120)) {
                    panic!("[{name}] host {JOINER} did not join: {e}\n{}", cl.logs());
                }
                clients.set_targets(targets(&cl));
                *faults.entry("join").or_default() += 1;
                format!("host {JOINER} joined in {:.1?}", t.elapsed())
            }
            Fault::Decommission if joined && !decommissioned => {
                decommissioned = true;
                let t = Instant::now();
                // Clients leave it first: it stops once it has left.
                let mut rest_targets = targets(&cl);
                rest_targets.retain(|a| *a != cl.http(JOINER));
                clients.set_targets(rest_targets);
                let out = Command::new(BIN)
                    .args([
                        "decommission",
                        "--node",
                        &cl.http(JOINER),
                        "--timeout",
                        "120s",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "[{name}] decommission failed: {}{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    cl.logs()
                );
                let mut h = cl.hosts.remove(&JOINER).unwrap();
                let status = h.proc.exit_within(Duration::from_secs(60));
                assert!(status.success(), "host {JOINER} exited with {status}");
                *faults.entry("decommission").or_default() += 1;
                format!("host {JOINER} decommissioned in {:.1?}", t.elapsed())
            }
            Fault::Join | Fault::Decommission => continue,
        };
        for h in 1..=JOINER {
            cl.net.heal(h);
        }
        println!("[{name}] {at:>5.1}s {what}; healed");
        std::thread::sleep(rest);
    }

    // Heal everything (already done after each step), then converge.
    for h in 1..=JOINER {
        cl.net.heal(h);
    }
    let paused: Vec<usize> = cl
        .hosts
        .iter()
        .filter(|(_, h)| h.paused)
        .map(|(&i, _)| i)
        .collect();
    for i in paused {
        cl.signal(i, "-CONT");
    }
    clients.stop();
    let settle = match cl.wait_settled(Duration::from_secs(120)) {
        Ok(d) => d,
        Err(e) => panic!("[{name}] no convergence after healing: {e}\n{}", cl.logs()),
    };
    println!("[{name}] healed; converged in {settle:.1?}");

    // Final reads: every key once, at QUORUM, round the hosts.
    let mut history = std::mem::take(&mut *clients.history.lock().unwrap());
    let nodes = targets(&cl);
    for k in 0..KEYS {
        let node = &nodes[k as usize % nodes.len()];
        let mut r = operate(t0, 99, node, Op::Get, &format!("k{k}"), None);
        r.final_read = true;
        history.push(r);
    }
    history.sort_by_key(|r| r.invoked_us);
    let path = dir.join("history.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for r in &history {
        writeln!(f, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let report = check_history_file(&path).unwrap();
    drop(cl);
    RunResult {
        history: path,
        report,
        faults,
        took: started.elapsed(),
    }
}

fn print_result(name: &str, r: &RunResult) {
    println!("[{name}] history: {}", r.history.display());
    println!(
        "[{name}] {} operations in {:.1?}:",
        r.report.operations, r.took
    );
    for (kind, (ok, failed)) in &r.report.by_kind {
        println!("[{name}]   {kind}: {ok} ok, {failed} failed (error or timeout)");
    }
    println!("[{name}] faults injected: {:?}", r.faults);
    println!(
        "[{name}] violations: {} {:?}",
        r.report.violations.len(),
        r.report.violation_counts()
    );
    for v in r.report.violations.iter().take(10) {
        println!("[{name}]   {v}");
    }
}

#[test]
#[ignore = "needs root and network namespaces; .ci/run runs it"]
fn five_hosts_in_namespaces_under_a_nemesis() {
    let minutes: f64 = std::env::var("CASSIO_NETNS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0);
    let dir = tempfile::tempdir().unwrap();
    println!("temp dir: {}", dir.path().display());

    let normal = nemesis_run(
        "nemesis",
        dir.path(),
        Duration::from_secs_f64(minutes * 60.0),
        true,
        None,
    );
    print_result("nemesis", &normal);

    // The deliberately broken build: replicas acknowledge half the writes
    // they are sent without applying them.
    #[cfg(feature = "failpoints")]
    let broken = {
        let b = nemesis_run(
            "broken",
            dir.path(),
            Duration::from_secs(30),
            false,
            Some("storage-apply-drop=50%return"),
        );
        print_result("broken", &b);
        b.report.violations.len()
    };
    #[cfg(not(feature = "failpoints"))]
    let broken = {
        println!("[broken] skipped: built without the `failpoints` feature (--all-features)");
        1
    };

    let keep = std::env::var("CASSIO_NETNS_KEEP").is_ok_and(|v| v == "1");
    let failed = !normal.report.violations.is_empty() || broken == 0;
    if keep || failed {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    let total = normal.report.operations;
    assert!(
        total > 500,
        "too little load to mean anything: {total} operations"
    );
    assert!(
        normal.report.violations.is_empty(),
        "the nemesis run broke guarantees: {:?}",
        normal.report.violation_counts()
    );
    assert!(
        broken > 0,
        "the checker missed the broken build (replicas acknowledging dropped writes)"
    );
}
