//! Real `cassio` processes on 127.0.0.1: a three-node cluster formed from
//! one seed, reads and writes at several levels, a SIGKILLed node convicted
//! and restarted on its data, and graceful shutdown on SIGTERM.
//!
//! Every port is chosen by the OS (the node prints what it bound), every
//! wait is bounded, and every child is killed when its guard drops.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use cassio_core::{ClientError, Consistency};
use cassio_node::client::{Client, ClientConfig};
use cassio_node::ClusterStatus;
use process_common::{
    all_normal_and_up, cli, http, node_args, start_node, start_three, wait_status, Scenario, BIN,
};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a restarted node may stay `Syncing`: normally about a second,
/// but if its first anti-entropy exchange loses a frame (a peer's
/// connection to it still in reconnect backoff drops it) the exchange fails
/// only at the 30 s exchange timeout, and the round is retried 5 s later.
const SYNCING_BOUND: Duration = Duration::from_secs(60);

/// Waits until the node at `client` coordinates reads: a node that joined
/// or restarted answers `Joining` until its view of the ring has settled,
/// and restarted replicas are `Syncing` (left out of reads below ALL, so a
/// read may find no replica to ask: `Unavailable`) until they caught up;
/// meanwhile a read it sends to a peer may be dropped by a connection still
/// in its reconnect backoff (`Timeout`).
fn wait_ready(rt: &tokio::runtime::Runtime, client: SocketAddr) {
    let c = rt.block_on(Client::connect(&[client])).unwrap();
    let deadline = Instant::now() + SYNCING_BOUND;
    loop {
        match rt.block_on(c.get("ready-probe", Some(Consistency::One))) {
            Ok(_) => return,
            Err(e)
                if matches!(
                    e.client_error(),
                    Some(
                        ClientError::Joining
                            | ClientError::Unavailable { .. }
                            | ClientError::Timeout { .. }
                    )
                ) =>
            {
                assert!(Instant::now() < deadline, "{client} never settled: {e:?}");
            }
            Err(e) => panic!("{client}: {e:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A RESP `SET` then `GET` over a raw socket; returns the GET's reply bytes.
fn resp_set_get(addr: SocketAddr, key: &str, value: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cmd = |parts: &[&str]| {
        let mut out = format!("*{}\r\n", parts.len());
        for p in parts {
            out.push_str(&format!("${}\r\n{p}\r\n", p.len()));
        }
        out
    };
    s.write_all(cmd(&["SET", key, value]).as_bytes()).unwrap();
    s.write_all(cmd(&["GET", key]).as_bytes()).unwrap();
    let want = format!("+OK\r\n${}\r\n{value}\r\n", value.len());
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < want.len() {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The runtime the tests drive their clients on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Client timeouts that bound every call of these tests.
fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    }
}

fn run_scenario(sc: Scenario) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    if sc.transport == "quic" {
        let out = cli(&[
            "gen-certs",
            "--dir",
            &dir.join("certs").display().to_string(),
            "--nodes",
            "3",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut p1, r1) = start_node("node1", dir, &node_args(&sc, dir, 1, None, None));
    let (mut p2, r2) = start_node("node2", dir, &node_args(&sc, dir, 2, Some(r1.peer), None));
    let (p3, r3) = start_node("node3", dir, &node_args(&sc, dir, 3, Some(r1.peer), None));
    let mut p3 = Some(p3);

    // The cluster forms from one seed: every node sees three Normal members.
    for r in [&r1, &r2, &r3] {
        wait_status(
            "three Normal nodes",
            r.client,
            Duration::from_secs(30),
            |s| all_normal_and_up(s, 3),
        );
    }
    let table = cli(&["status", "--node", &r2.client.to_string()]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.matches("UN ").count(), 3, "{table}");

    let rt = runtime();
    let cfg = client_config();
    for r in [&r1, &r2, &r3] {
        wait_ready(&rt, r.client);
    }
    let c1 = rt
        .block_on(Client::connect_with(&[r1.client], cfg.clone()))
        .unwrap();
    let c2 = rt
        .block_on(Client::connect_with(&[r2.client], cfg.clone()))
        .unwrap();

    // QUORUM through the native client, written on one node, read on another.
    rt.block_on(c1.set("q", "quorum-value", Some(Consistency::Quorum)))
        .unwrap();
    let v = rt.block_on(c2.get("q", Some(Consistency::Quorum))).unwrap();
    assert_eq!(v.as_deref(), Some(&b"quorum-value"[..]));

    // The CLI uses the same client.
    let out = cli(&[
        "set",
        "cli-key",
        "cli-value",
        "--consistency",
        "quorum",
        "--node",
        &r2.client.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["get", "cli-key", "--node", &r3.client.to_string()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli-value");

    // RESP and HTTP end in the same coordinator.
    if let Some(resp) = r1.resp {
        let got = resp_set_get(resp, "resp-key", "resp-value");
        assert_eq!(got, "+OK\r\n$10\r\nresp-value\r\n");
        let v = rt
            .block_on(c2.get("resp-key", Some(Consistency::Quorum)))
            .unwrap();
        assert_eq!(v.as_deref(), Some(&b"resp-value"[..]));
    }
    if let Some(h) = r2.http {
        let (code, _) = http(h, "PUT", "/kv/http-key?consistency=quorum", "http-value");
        assert!((200..300).contains(&code), "PUT answered {code}");
        let (code, body) = http(r3.http.unwrap_or(h), "GET", "/kv/http-key", "");
        assert_eq!(code, 200);
        assert!(body.contains("http-value"), "{body}");
    }

    // Data node 3 holds before it is killed (ALL: every replica has it).
    for i in 0..20 {
        rt.block_on(c1.set(format!("pre-{i}"), format!("v{i}"), Some(Consistency::All)))
            .unwrap();
    }

    // The default sync policy makes writes durable within 100 ms (a
    // SIGKILL loses what is younger); "held before the kill" means past that.
    std::thread::sleep(Duration::from_millis(500));

    // SIGKILL node 3.
    if let Some(mut p) = p3.take() {
        p.kill();
    }
    for level in [Consistency::Quorum, Consistency::One] {
        rt.block_on(c1.set("after-kill", "x", Some(level))).unwrap();
        let v = rt.block_on(c2.get("after-kill", Some(level))).unwrap();
        assert_eq!(v.as_deref(), Some(&b"x"[..]));
    }

    // Once node 3 is convicted, ALL fails at once with Unavailable.
    wait_status(
        "node 3 seen down",
        r1.client,
        Duration::from_secs(30),
        |s| s.members.iter().any(|m| m.id == r3.id && !m.up),
    );
    let started = Instant::now();
    let e = rt
        .block_on(c1.set("all-key", "x", Some(Consistency::All)))
        .unwrap_err();
    assert!(
        matches!(
            e.client_error(),
            Some(ClientError::Unavailable {
                needed: 3,
                alive: 2
            })
        ),
        "{e:?}"
    );
    let e = rt
        .block_on(c1.get("pre-1", Some(Consistency::All)))
        .unwrap_err();
    assert!(
        matches!(e.client_error(), Some(ClientError::Unavailable { .. })),
        "{e:?}"
    );
    // Far below the 3 s request timeout: nothing was sent and waited for.
    assert!(started.elapsed() < Duration::from_millis(2500));
    for level in [Consistency::Quorum, Consistency::One] {
        rt.block_on(c1.set("after-down", "y", Some(level))).unwrap();
        let v = rt.block_on(c2.get("after-down", Some(level))).unwrap();
        assert_eq!(v.as_deref(), Some(&b"y"[..]));
    }

    // Restart node 3 on the same data dir and ports; it keeps its id.
    let (p3b, r3b) = start_node(
        "node3-restarted",
        dir,
        &node_args(&sc, dir, 3, Some(r1.peer), Some(&r3)),
    );
    let _p3b = p3b;
    assert_eq!(r3b.id, r3.id);
    assert!(r3b.generation > r3.generation);
    wait_status(
        "node 3 up again with a new generation",
        r1.client,
        Duration::from_secs(30),
        |s| {
            s.members
                .iter()
                .any(|m| m.id == r3.id && m.up && m.generation == r3b.generation)
        },
    );
    // Normal once it caught up (it is Syncing until then; SYNCING_BOUND).
    wait_status("node 3 sees the cluster", r3b.client, SYNCING_BOUND, |s| {
        all_normal_and_up(s, 3)
    });
    wait_ready(&rt, r3b.client);
    // It serves (at ONE, as coordinator) what it held before the kill.
    let c3 = rt
        .block_on(Client::connect_with(&[r3b.client], cfg))
        .unwrap();
    for i in 0..20 {
        let v = rt
            .block_on(c3.get(format!("pre-{i}"), Some(Consistency::One)))
            .unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "pre-{i}");
    }
    // With everyone back, ALL works again: once every node has heard of the
    // new incarnation and the peers' connections to it are re-established
    // (a transport may still be in its reconnect backoff for a moment).
    wait_status(
        "node 2 sees node 3 up",
        r2.client,
        Duration::from_secs(30),
        |s| {
            s.members
                .iter()
                .any(|m| m.id == r3.id && m.up && m.generation == r3b.generation)
        },
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.block_on(c3.set("all-key", "z", Some(Consistency::All))) {
            Ok(_) => break,
            Err(e) => {
                eprintln!("ALL after the restart not yet: {e}");
                assert!(Instant::now() < deadline, "ALL never recovered: {e:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    // Graceful shutdown on SIGTERM: a clean exit.
    drop((c1, c2, c3));
    let mut p3b = _p3b;
    for p in [&mut p3b, &mut p2, &mut p1] {
        let status = p.terminate();
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            p.name,
            p.log_text()
        );
    }
}

#[test]
fn three_processes_tcp_native() {
    run_scenario(Scenario {
        name: "proc-tcp",
        transport: "tcp",
        store: "native",
    });
}

#[test]
fn three_processes_quic_native() {
    run_scenario(Scenario {
        name: "proc-quic",
        transport: "quic",
        store: "native",
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn three_processes_tcp_rocksdb() {
    run_scenario(Scenario {
        name: "proc-rocks",
        transport: "tcp",
        store: "rocksdb",
    });
}

#[cfg(feature = "sled")]
#[test]
fn three_processes_tcp_sled() {
    run_scenario(Scenario {
        name: "proc-sled",
        transport: "tcp",
        store: "sled",
    });
}

#[test]
fn bad_configuration_is_one_line_and_exit_code_2() {
    for (args, field) in [
        (
            vec!["--replication-factor", "0"],
            "replication_factor = \"0\"",
        ),
        (vec!["--consistency", "most"], "consistency = \"most\""),
        (
            vec!["--listen", "not-an-address"],
            "listen = \"not-an-address\"",
        ),
        (vec!["--transport", "quic"], "transport = \"quic\""),
        (vec!["--sync", "sometimes"], "sync = \"sometimes\""),
    ] {
        let out = Command::new(BIN)
            .arg("start")
            .args(&args)
            .args(["--data-dir", "/nonexistent/never-created"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    if !cfg!(feature = "rocksdb") {
        let out = cli(&["start", "--store", "rocksdb"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("`rocksdb` cargo feature"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cassio.toml");
    std::fs::write(&file, "replication_factor = 3\nreplicas = 2\n").unwrap();
    let out = cli(&["start", "--config", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replicas = \"2\": unknown setting"), "{err}");
}

/// Issue 10's whole-cluster restart: three nodes with `--sync always` all
/// killed with SIGKILL, then restarted one at a time with delays. While only
/// one is back it knows the ring (persisted view) but has heard from no
/// majority, so it acknowledges nothing; once all are back, every QUORUM
/// write acknowledged before the kill reads back at QUORUM.
#[test]
fn whole_cluster_sigkill_and_staggered_restart_loses_no_acknowledged_write() {
    let sc = Scenario {
        name: "cold-restart",
        transport: "tcp",
        store: "native",
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let with_sync = |mut a: Vec<String>| {
        a.extend(["--sync".to_string(), "always".to_string()]);
        a
    };
    let mut nodes = start_three(&sc, dir, |_, a| *a = with_sync(std::mem::take(a)));
    let (p3, r3) = nodes.pop().unwrap();
    let (p2, r2) = nodes.pop().unwrap();
    let (p1, r1) = nodes.pop().unwrap();
    let rt = runtime();
    for r in [&r1, &r2, &r3] {
        wait_ready(&rt, r.client);
    }
    let cfg = client_config();
    let c = rt
        .block_on(Client::connect_with(
            &[r1.client, r2.client, r3.client],
            cfg.clone(),
        ))
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..60 {
        let (k, v) = (format!("cold-{i}"), format!("value-{i}"));
        if rt
            .block_on(c.set(k.clone(), v.clone(), Some(Consistency::Quorum)))
            .is_ok()
        {
            acked.push((k, v));
        }
    }
    assert_eq!(
        acked.len(),
        60,
        "a healthy cluster acknowledges every write"
    );
    drop(c);
    for mut p in [p1, p2, p3] {
        p.kill();
    }

    // Node 1 alone, on its old ports and data: it must refuse to coordinate.
    let (p1, r1b) = start_node(
        "node1-again",
        dir,
        &with_sync(node_args(&sc, dir, 1, None, Some(&r1))),
    );
    let c1 = rt
        .block_on(Client::connect_with(&[r1b.client], cfg.clone()))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    let mut refused = 0;
    while Instant::now() < until {
        let r = rt.block_on(c1.set("alone", "x", Some(Consistency::One)));
        assert!(
            r.is_err(),
            "a lone restarted node acknowledged a write with two of three replicas unknown"
        );
        refused += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(refused > 5);

    // Node 2 joins it after a delay: two of three is a majority.
    let (p2, r2b) = start_node(
        "node2-again",
        dir,
        &with_sync(node_args(&sc, dir, 2, Some(r1.peer), Some(&r2))),
    );
    wait_ready(&rt, r1b.client);
    wait_ready(&rt, r2b.client);
    std::thread::sleep(Duration::from_secs(2));
    let (p3, r3b) = start_node(
        "node3-again",
        dir,
        &with_sync(node_args(&sc, dir, 3, Some(r1.peer), Some(&r3))),
    );
    for r in [&r1b, &r2b, &r3b] {
        // Each restarted node is Syncing until it caught up (see
        // SYNCING_BOUND).
        wait_status("three Normal nodes again", r.client, SYNCING_BOUND, |s| {
            all_normal_and_up(s, 3)
        });
    }
    wait_ready(&rt, r3b.client);
    let c = rt
        .block_on(Client::connect_with(
            &[r1b.client, r2b.client, r3b.client],
            cfg,
        ))
        .unwrap();
    let mut missing = Vec::new();
    for (k, v) in &acked {
        match rt.block_on(c.get(k.clone(), Some(Consistency::Quorum))) {
            Ok(Some(got)) if got.as_ref() == v.as_bytes() => {}
            other => missing.push(format!("{k}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {missing:?}",
        missing.len(),
        acked.len()
    );
    drop((p1, p2, p3));
}

/// A node started without the cluster's replication factor (its default
/// is one) must never coordinate with its own factor: until it has the
/// cluster's agreed schema it refuses (`config_mismatch`, naming the
/// setting, or `joining` while it fetches the schema), then it takes the
/// cluster's keyspaces (`--replication-factor` only seeds a brand-new
/// cluster) and serves with RF 3.
#[test]
fn a_node_with_another_replication_factor_takes_the_clusters() {
    let sc = Scenario {
        name: "rf-mismatch",
        transport: "tcp",
        store: "native",
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nodes = start_three(&sc, dir, |i, a| {
        if i == 3 {
            let at = a.iter().position(|x| x == "--replication-factor").unwrap();
            a[at + 1] = "1".into();
        }
    });
    let (r1, r3) = (&nodes[0].1, &nodes[2].1);
    let rt = runtime();
    wait_ready(&rt, r1.client);
    let cfg = client_config();
    let lone = rt
        .block_on(Client::connect_with(&[r3.client], cfg.clone()))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.block_on(lone.set("k", "v", Some(Consistency::One))) {
            Ok(_) => break,
            Err(e) => {
                let refused = match e.client_error() {
                    Some(ClientError::Joining) => true,
                    Some(ClientError::ConfigMismatch { .. }) => {
                        e.to_string().contains("replication_factor")
                    }
                    _ => false,
                };
                assert!(refused, "node 3 failed otherwise: {e}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never took the cluster's schema"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It answered only once it used the cluster's factor.
    let st = http_status(r3.http.unwrap()).unwrap();
    let rf = st
        .keyspaces
        .iter()
        .find(|k| k.name == "default")
        .map(|k| k.replication_factor);
    assert_eq!(rf, Some(3), "{st:#?}");
    assert!(st.schema_version >= 1, "{st:#?}");
    // The write went to the cluster's replicas: a read of all three
    // through another node sees it.
    let c = rt
        .block_on(Client::connect_with(&[r1.client], cfg))
        .unwrap();
    let v = rt.block_on(c.get("k", Some(Consistency::All))).unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
}

/// The node's `/status`, read over HTTP (what `cassio repair` polls).
fn http_status(addr: SocketAddr) -> Option<ClusterStatus> {
    let (code, body) = http(addr, "GET", "/status", "");
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// The value of the series `name` (exact name and labels) in `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (code, body) = http(addr, "GET", "/metrics", "");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Issue 11: a replica SIGKILLed while 300 keys are written at QUORUM gets
/// them back once restarted (hints from the coordinator, then an
/// anti-entropy round), leaves `Syncing` for `Normal`, and then serves
/// every one of them alone, at ONE, with both other replicas killed.
#[test]
fn a_restarted_replica_catches_up_and_alone_serves_every_write_it_missed() {
    let sc = Scenario {
        name: "catch-up",
        transport: "tcp",
        store: "native",
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut nodes = start_three(&sc, dir, |_, _| {});
    let (p3, r3) = nodes.pop().unwrap();
    let (p2, r2) = nodes.pop().unwrap();
    let (p1, r1) = nodes.pop().unwrap();
    let (h1, h3) = (r1.http.unwrap(), r3.http.unwrap());
    let rt = runtime();
    for r in [&r1, &r2, &r3] {
        wait_ready(&rt, r.client);
    }
    let mut p3 = p3;
    p3.kill();
    // Convicted first, so the coordinator keeps hints for it at once.
    wait_status(
        "node 3 seen down",
        r1.client,
        Duration::from_secs(30),
        |s| s.members.iter().any(|m| m.id == r3.id && !m.up),
    );
    let c1 = rt
        .block_on(Client::connect_with(&[r1.client], client_config()))
        .unwrap();
    let written: Vec<(String, String)> = (0..300)
        .map(|i| (format!("missed-{i}"), format!("value-{i}-{}", i * 7)))
        .collect();
    for (k, v) in &written {
        rt.block_on(c1.set(k.clone(), v.clone(), Some(Consistency::Quorum)))
            .unwrap();
    }
    // Every write has node 3 as a replica (RF 3 of 3): node 1 holds a hint
    // for each (stored in the background: the last may land just after its
    // write was acknowledged).
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = http_status(h1).unwrap();
        if st.hints.stored >= 300 || Instant::now() >= deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(st.hints.stored >= 300, "{:?}", st.hints);
    assert!(
        st.hints
            .pending
            .iter()
            .any(|p| p.node_id == r3.id && p.bytes > 0),
        "{:?}",
        st.hints
    );
    let pending = metric(
        h1,
        &format!("cassio_hints_pending_bytes{{target=\"{}\"}}", r3.id),
    );
    assert!(pending.is_some_and(|b| b > 0.0), "{pending:?}");

    // Restart node 3 on its data and ports: Syncing until caught up.
    let (p3b, r3b) = start_node(
        "node3-restarted",
        dir,
        &node_args(&sc, dir, 3, Some(r1.peer), Some(&r3)),
    );
    assert_eq!(r3b.id, r3.id);
    let deadline = Instant::now() + SYNCING_BOUND;
    let mut states = Vec::new();
    loop {
        if let Some(st) = http_status(h3) {
            if states.last() != Some(&st.state) {
                states.push(st.state.clone());
            }
            if st.state == "Normal" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never caught up; states seen {states:?}; log:\n{}",
            p3b.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        states.iter().all(|s| s == "Syncing" || s == "Normal"),
        "{states:?}"
    );
    assert!(
        p3b.log_text().contains("caught up after the restart"),
        "{}",
        p3b.log_text()
    );
    let st3 = http_status(h3).unwrap();
    assert!(st3.repair.rounds_completed >= 1, "{:?}", st3.repair);
    assert_eq!(metric(h3, "cassio_node_syncing"), Some(0.0));
    // The hints went to node 3 (it left Syncing only once none were held).
    let st1 = http_status(h1).unwrap();
    assert!(st1.hints.delivered > 0, "{:?}", st1.hints);
    assert!(
        !st1.hints.pending.iter().any(|p| p.node_id == r3.id),
        "{:?}",
        st1.hints
    );
    assert!(metric(h1, "cassio_hints_delivered_total").is_some_and(|n| n > 0.0));

    // Only node 3 is left.
    drop(c1);
    for mut p in [p1, p2] {
        p.kill();
    }
    wait_status(
        "nodes 1 and 2 seen down by node 3",
        r3b.client,
        Duration::from_secs(30),
        |s| s.members.iter().filter(|m| m.id != r3.id).all(|m| !m.up),
    );
    let c3 = rt
        .block_on(Client::connect_with(&[r3b.client], client_config()))
        .unwrap();
    let mut wrong = Vec::new();
    for (k, v) in &written {
        match rt.block_on(c3.get(k.clone(), Some(Consistency::One))) {
            Ok(Some(got)) if got.as_ref() == v.as_bytes() => {}
            other => wrong.push(format!("{k}: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 300 writes missing on the revived node: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    drop((c3, p3b, r2));
}

/// `cassio repair` against a running cluster: it starts a round on the
/// node it asks, follows it to its end and prints one summary line; a
/// keyspace or peer the node does not know is refused with the reason.
#[test]
fn cassio_repair_follows_its_round_and_prints_a_summary() {
    let sc = Scenario {
        name: "repair-cli",
        transport: "tcp",
        store: "native",
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nodes = start_three(&sc, dir, |_, _| {});
    let (r1, r2) = (&nodes[0].1, &nodes[1].1);
    let rt = runtime();
    for (_, r) in &nodes {
        wait_ready(&rt, r.client);
    }
    let c = rt
        .block_on(Client::connect_with(&[r1.client], client_config()))
        .unwrap();
    for i in 0..50 {
        rt.block_on(c.set(format!("r-{i}"), "v", Some(Consistency::All)))
            .unwrap();
    }
    let h1 = r1.http.unwrap().to_string();
    let before = http_status(r1.http.unwrap()).unwrap().repair;

    let out = cli(&["repair", "--http", &h1, "--timeout", "60s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout.trim();
    assert_eq!(line.lines().count(), 1, "{stdout}");
    assert!(
        line.starts_with("repair of every keyspace with every peer completed in "),
        "{line}"
    );
    // RF 3 of 3: node 1 shares the default keyspace with both peers.
    assert!(line.contains("2 pair(s) synced"), "{line}");
    let after = http_status(r1.http.unwrap()).unwrap().repair;
    assert!(
        after.rounds_completed > before.rounds_completed,
        "{before:?} {after:?}"
    );
    assert!(after.keys_compared >= before.keys_compared);

    // One keyspace with one peer.
    let peer = r2.peer.to_string();
    let out = cli(&[
        "repair",
        "--http",
        &h1,
        "--keyspace",
        "default",
        "--node",
        &peer,
        "--timeout",
        "60s",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("repair of keyspace default with {peer} completed")),
        "{stdout}"
    );
    assert!(stdout.contains("1 pair(s) synced"), "{stdout}");
    let scoped = http_status(r1.http.unwrap()).unwrap().repair;
    assert_eq!(
        scoped.scoped_rounds_completed,
        after.scoped_rounds_completed + 1
    );

    // Refusals name what is wrong.
    for (args, why) in [
        (vec!["--keyspace", "nope"], "unknown keyspace"),
        (
            vec!["--node", "127.0.0.1:1"],
            "no member listens at 127.0.0.1:1",
        ),
    ] {
        let mut full = vec!["repair", "--http", &h1, "--timeout", "60s"];
        full.extend(&args);
        let out = cli(&full);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let out = cli(&["repair", "--http", &h1, "--timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2));

    // `cassio status`: node 1 repaired moments ago.
    let out = cli(&["status", "--node", &r1.client.to_string()]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(&r1.peer.to_string()))
        .unwrap_or_default();
    assert!(row.contains("s ago"), "{table}");
    assert!(table.contains("Repaired"), "{table}");
    assert!(table.contains("last repair round completed "), "{table}");
    drop(nodes);
}
