//! A CRAQ keyspace on three real processes: clients read, write and
//! compare-and-set a few keys over HTTP while one node is killed and
//! started again; the recorded history must pass the linearizability
//! checker the simulator's histories pass (`conformance::linearizability`),
//! and every key must answer once the node is back.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use bytes::Bytes;
use conformance::linearizability::{check, Event, Op, Options, Outcome, Verdict};
use process_common::{node_args, start_node, start_three, try_http, Scenario};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS: usize = 4;
const CLIENTS: usize = 4;

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// One client's operation, sent to `addr`, recorded with its outcome.
fn run_op(addr: SocketAddr, client: u64, key: &str, op: Op, t0: Instant) -> Event {
    let path = format!("/ks/lin/kv/{key}");
    let invoked = t0.elapsed().as_micros() as u64;
    let answer = match &op {
        Op::Read => try_http(addr, "GET", &path, "", ""),
        Op::Write(v) => try_http(addr, "PUT", &path, "", std::str::from_utf8(v).unwrap()),
        Op::Cas { expected, new } => {
            let header = match expected {
                Some(e) => format!("If-Match: \"{}\"\r\n", hex(e)),
                None => "If-None-Match: *\r\n".to_string(),
            };
            try_http(
                addr,
                "PUT",
                &path,
                &header,
                std::str::from_utf8(new).unwrap(),
            )
        }
        _ => unreachable!("the workload sends reads, writes and compare-and-sets"),
    };
    let completed = t0.elapsed().as_micros() as u64;
    let outcome = match (&op, &answer) {
        (Op::Read, Some((200, body))) => Outcome::Value(Some(Bytes::from(body.clone()))),
        (Op::Read, Some((404, body))) if body.contains("not_found") => Outcome::Value(None),
        (Op::Write(_), Some((200, _))) => Outcome::Ok,
        (Op::Cas { .. }, Some((200, _))) => Outcome::Cas(true),
        (Op::Cas { .. }, Some((412, _))) => Outcome::Cas(false),
        // Errors and silence: the write may or may not have happened (a
        // failed read is dropped by the caller).
        _ => Outcome::Unknown,
    };
    let completed = (outcome != Outcome::Unknown).then_some(completed);
    Event {
        client,
        key: Bytes::from(key.to_string()),
        op,
        invoked,
        completed,
        outcome,
    }
}

#[test]
fn craq_history_with_a_node_killed_and_restarted_is_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Scenario {
        name: "craq",
        transport: "tcp",
        store: "native",
    };
    let mut nodes = start_three(&sc, dir.path(), |_, _| {});
    let https: Vec<SocketAddr> = nodes.iter().map(|(_, r)| r.http.unwrap()).collect();
    let (code, body) = try_http(
        https[0],
        "POST",
        "/admin/keyspaces",
        "Content-Type: application/json\r\n",
        r#"{"name": "lin", "replication_factor": 3, "mode": "craq"}"#,
    )
    .unwrap();
    assert_eq!(code, 201, "{body}");
    // The keyspace answers writes on every node (each learned the schema
    // and its chain epoch's lease period passed).
    for (i, &a) in https.iter().enumerate() {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = try_http(a, "PUT", "/ks/lin/kv/warm", "", "w");
            if matches!(r, Some((200, _))) {
                break;
            }
            assert!(Instant::now() < until, "node {i} never took a write: {r:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let t0 = Instant::now();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let targets = Arc::new(Mutex::new(https.clone()));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let (events, stop, targets) = (events.clone(), stop.clone(), targets.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            let mut seen: Vec<Option<Bytes>> = vec![None; KEYS];
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let k = (i as usize * 7 + c) % KEYS;
                let addr = {
                    let t = targets.lock().unwrap();
                    t[(i as usize + c) % t.len()]
                };
                let op = match i % 3 {
                    0 => Op::Read,
                    1 => Op::Write(Bytes::from(format!("c{c}-{i}"))),
                    _ => Op::Cas {
                        expected: seen[k].clone(),
                        new: Bytes::from(format!("c{c}-{i}")),
                    },
                };
                let e = run_op(addr, c as u64, &format!("k{k}"), op, t0);
                match (&e.op, &e.outcome) {
                    (Op::Read, Outcome::Value(v)) => seen[k] = v.clone(),
                    (Op::Write(v), Outcome::Ok) => seen[k] = Some(v.clone()),
                    (Op::Cas { new, .. }, Outcome::Cas(true)) => seen[k] = Some(new.clone()),
                    _ => {}
                }
                // A read that failed had no effect: it is left out.
                if !(e.op == Op::Read && e.outcome == Outcome::Unknown) {
                    events.lock().unwrap().push(e);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(4));
    // Kill node 2 (no goodbye), keep the clients on the two others while
    // it is down, then start it again on its data directory.
    nodes[1].0.kill();
    *targets.lock().unwrap() = vec![https[0], https[2]];
    std::thread::sleep(Duration::from_secs(10));
    let ready = nodes[1].1.clone();
    let args = node_args(&sc, dir.path(), 2, Some(nodes[0].1.peer), Some(&ready));
    nodes[1] = start_node("node2", dir.path(), &args);
    *targets.lock().unwrap() = https.clone();
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Every key answers a read on every node once the node is back
    // (bounded: retried for up to 30 s).
    let mut history = events.lock().unwrap().clone();
    for (n, &a) in https.iter().enumerate() {
        for k in 0..KEYS {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let e = run_op(a, 100 + n as u64, &format!("k{k}"), Op::Read, t0);
                if e.outcome != Outcome::Unknown {
                    history.push(e);
                    break;
                }
                assert!(Instant::now() < until, "node {n} never answered k{k}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let done = |f: &dyn Fn(&Event) -> bool| history.iter().filter(|e| f(e)).count();
    let reads = done(&|e| e.op == Op::Read);
    let writes = done(&|e| matches!(e.op, Op::Write(_)) && e.outcome == Outcome::Ok);
    let swapped = done(&|e| e.outcome == Outcome::Cas(true));
    let not_swapped = done(&|e| e.outcome == Outcome::Cas(false));
    let unknown = done(&|e| e.outcome == Outcome::Unknown);
    println!(
        "{} operations: {reads} reads, {writes} writes acknowledged, {swapped} swaps, {not_swapped} refused swaps, {unknown} unknown outcomes",
        history.len()
    );
    assert!(writes > 20 && reads > 20 && swapped > 0, "too little load");
    let report = check(&history, Options::default()).unwrap();
    for (key, k) in &report.keys {
        match &k.verdict {
            Verdict::Linearizable { .. } => {}
            other => panic!("key {key:?}: {other:?}"),
        }
    }
    println!("{} keys linearizable", report.keys.len());
    for (p, _) in &mut nodes {
        p.terminate();
    }
}
