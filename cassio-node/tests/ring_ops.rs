//! The operator's ring commands against real processes: `cassio
//! decommission`, `cassio remove --dead` and `cassio replace --dead` (and
//! its other spelling, `cassio start --replace`), on
//! a three-node cluster (RF 3) plus a fourth node, with 200 keys written
//! at QUORUM that must all read back at QUORUM after every change; and
//! the refusals (removing a live node, decommissioning below the
//! replication factor, `--replace` on a used data dir).

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{
    cli, http, node_args, start_node, start_node_as, start_three, wait_status, Ready, Scenario,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const KEYS: usize = 200;

/// Members that have not left: `n` of them, all `Normal` and up.
fn settled(s: &cassio_node::ClusterStatus, n: usize) -> bool {
    let staying: Vec<_> = s.members.iter().filter(|m| m.state != "Left").collect();
    staying.len() == n && staying.iter().all(|m| m.up && m.state == "Normal")
}

fn http_of(r: &Ready) -> SocketAddr {
    r.http.unwrap()
}

/// Writes the keys at QUORUM, spread over `targets`, retrying answers
/// that say "later" (joining, overloaded) for a bounded time.
fn write_keys(targets: &[SocketAddr]) {
    for i in 0..KEYS {
        let at = targets[i % targets.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = http(
                at,
                "PUT",
                &format!("/kv/key{i}?consistency=quorum"),
                &format!("value{i}"),
            );
            if code == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "write of key{i} at {at} kept failing: {code} {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads every key at QUORUM from `targets`; returns the keys that did not
/// read back their value.
fn lost_keys(targets: &[SocketAddr]) -> Vec<String> {
    let mut lost = Vec::new();
    for i in 0..KEYS {
        let at = targets[i % targets.len()];
        let (code, body) = http(at, "GET", &format!("/kv/key{i}?consistency=quorum"), "");
        if code != 200 || body != format!("value{i}") {
            lost.push(format!("key{i}: {code} {body}"));
        }
    }
    lost
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn decommission_remove_and_replace_keep_every_quorum_write() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Scenario {
        name: "ring-ops",
        transport: "tcp",
        store: "native",
    };
    let mut nodes = start_three(&sc, dir.path(), |_, _| {});
    let seed = nodes[0].1.peer;
    let (p4, r4) = start_node(
        "node4",
        dir.path(),
        &node_args(&sc, dir.path(), 4, Some(seed), None),
    );
    for r in nodes.iter().map(|(_, r)| r).chain([&r4]) {
        wait_status(
            "four Normal nodes",
            r.client,
            Duration::from_secs(120),
            |s| settled(s, 4),
        );
    }
    let mut all: Vec<SocketAddr> = nodes.iter().map(|(_, r)| http_of(r)).collect();
    all.push(http_of(&r4));
    write_keys(&all);
    let h1 = http_of(&nodes[0].1);

    // Refused: removing a live node, over HTTP (409) and from the CLI.
    let live = nodes[1].1.id;
    let (code, body) = http(h1, "POST", &format!("/admin/remove?node={live}"), "");
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("\"alive\"") && body.contains("is alive"),
        "{body}"
    );
    let (code, body) = http(h1, "POST", "/admin/remove?node=not-an-id", "");
    assert_eq!(code, 400, "{body}");
    let out = cli(&[
        "remove",
        "--dead",
        &live.to_string(),
        "--node",
        &h1.to_string(),
    ]);
    assert!(
        !out.status.success(),
        "removing a live node succeeded: {out:?}"
    );
    let err = text(&out.stderr);
    assert!(err.contains("409") && err.contains("is alive"), "{err}");

    // (a) Node 4 is decommissioned: its process exits 0 once it handed
    // its ranges over; the other three stay Normal with every key.
    let mut p4 = p4;
    let out = cli(&[
        "decommission",
        "--node",
        &http_of(&r4).to_string(),
        "--timeout",
        "3m",
    ]);
    let said = text(&out.stdout);
    assert!(
        out.status.success(),
        "decommission failed: {said}{}\nnode4 log:\n{}",
        text(&out.stderr),
        p4.log_text()
    );
    println!("cassio decommission printed:\n{said}");
    assert!(
        said.contains(&format!("node {} is leaving", r4.id)),
        "{said}"
    );
    let status = p4.exit_within(Duration::from_secs(60));
    let log = p4.log_text();
    assert!(status.success(), "node4 exited with {status}; log:\n{log}");
    assert!(
        log.contains("announcing Left"),
        "node4 did not hand over; log:\n{log}"
    );
    assert!(log.contains("stopping (decommissioned)"), "{log}");
    drop(p4);
    for (_, r) in &nodes {
        wait_status(
            "three Normal nodes after the decommission",
            r.client,
            Duration::from_secs(60),
            |s| settled(s, 3),
        );
    }
    let three: Vec<SocketAddr> = nodes.iter().map(|(_, r)| http_of(r)).collect();
    let lost = lost_keys(&three);
    assert!(
        lost.is_empty(),
        "keys lost after the decommission: {lost:?}"
    );

    // Refused: three nodes remain with RF 3.
    let (code, body) = http(h1, "POST", "/admin/decommission", "");
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("too_few_nodes") && body.contains("replication factor 3"),
        "{body}"
    );
    let out = cli(&[
        "decommission",
        "--node",
        &h1.to_string(),
        "--timeout",
        "10s",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("fewer than replication factor 3"),
        "{out:?}"
    );
    wait_status(
        "node 1 still serving",
        nodes[0].1.client,
        Duration::from_secs(10),
        |s| s.state == "Normal",
    );

    // (b) A fourth node again; then an original node dies and is removed.
    let (p5, r5) = start_node(
        "node5",
        dir.path(),
        &node_args(&sc, dir.path(), 5, Some(seed), None),
    );
    for r in nodes.iter().map(|(_, r)| r).chain([&r5]) {
        wait_status(
            "four Normal nodes again",
            r.client,
            Duration::from_secs(120),
            |s| settled(s, 4),
        );
    }
    let (mut p3, r3) = nodes.remove(2);
    p3.kill();
    let dead = r3.id;
    wait_status(
        "node 3 down",
        nodes[0].1.client,
        Duration::from_secs(60),
        |s| s.members.iter().any(|m| m.id == dead && !m.up),
    );
    let out = cli(&[
        "remove",
        "--dead",
        &dead.to_string(),
        "--node",
        &h1.to_string(),
        "--timeout",
        "3m",
    ]);
    let said = text(&out.stdout);
    assert!(
        out.status.success(),
        "remove failed: {said}{}\nnode1 log:\n{}",
        text(&out.stderr),
        nodes[0].0.log_text()
    );
    println!("cassio remove printed:\n{said}");
    assert!(said.contains(&format!("node {dead} removed")), "{said}");
    let mut live: Vec<&Ready> = nodes.iter().map(|(_, r)| r).collect();
    live.push(&r5);
    for r in &live {
        wait_status(
            "node 3 off every member list",
            r.client,
            Duration::from_secs(60),
            |s| settled(s, 3) && !s.members.iter().any(|m| m.id == dead),
        );
    }
    let targets: Vec<SocketAddr> = live.iter().map(|r| http_of(r)).collect();
    let lost = lost_keys(&targets);
    assert!(lost.is_empty(), "keys lost after removing node 3: {lost:?}");

    // `--replace` refuses a data dir that already names a node (exit 2).
    let used = dir.path().join("node3").display().to_string();
    let out = std::process::Command::new(process_common::BIN)
        .args([
            "start",
            "--data-dir",
            &used,
            "--seeds",
            &seed.to_string(),
            "--replace",
            "7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("empty data directory"),
        "{out:?}"
    );

    // (c) Node 2 dies; a new node takes its place with `cassio replace --dead`.
    let (mut p2, r2) = nodes.remove(1);
    p2.kill();
    let dead = r2.id;
    wait_status(
        "node 2 down",
        nodes[0].1.client,
        Duration::from_secs(60),
        |s| s.members.iter().any(|m| m.id == dead && !m.up),
    );
    let mut args = node_args(&sc, dir.path(), 6, Some(seed), None);
    args.extend(["--dead".to_string(), dead.to_string()]);
    let (p6, r6) = start_node_as("node6", dir.path(), "replace", &args);
    // While it joins (at least a request timeout), its status says so and
    // how far it has come; the log says what it took once it is done.
    let first = wait_status(
        "the replacement's status",
        r6.client,
        Duration::from_secs(30),
        |_| true,
    );
    let progress = first
        .join_progress
        .unwrap_or_else(|| panic!("no join progress: {first:#?}"));
    assert_eq!(first.state, "Joining", "{first:#?}");
    assert!(progress.elapsed_secs < 30.0, "{progress:?}");
    let live = [&nodes[0].1, &r5, &r6];
    for r in live {
        wait_status(
            "the replacement Normal and node 2 gone",
            r.client,
            Duration::from_secs(180),
            |s| settled(s, 3) && !s.members.iter().any(|m| m.id == dead),
        );
    }
    let targets: Vec<SocketAddr> = live.iter().map(|r| http_of(r)).collect();
    let lost = lost_keys(&targets);
    assert!(
        lost.is_empty(),
        "keys lost after replacing node 2: {lost:?}\nnode6 log:\n{}",
        p6.log_text()
    );
    let log = p6.log_text();
    let joined = log
        .lines()
        .find(|l| l.contains("joined: every node of the new ring"))
        .unwrap_or_else(|| panic!("node6 never logged its join:\n{log}"));
    assert!(
        joined.contains("took_secs=") && joined.contains("keys="),
        "{joined}"
    );
    assert!(
        wait_status("node6 Normal", r6.client, Duration::from_secs(5), |_| true)
            .join_progress
            .is_none(),
        "a Normal node shows no join progress"
    );
    drop((p5, p6, p2, p3));
}
