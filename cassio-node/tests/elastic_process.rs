//! Growing a cluster of real processes from three nodes to five and
//! shrinking it back to three while clients write and read at QUORUM over
//! HTTP: no QUORUM read during the moves misses an acknowledged write, and
//! every acknowledged write reads back afterwards. The client errors seen
//! during the moves are counted and printed.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod process_common;

use process_common::{
    node_args, start_node, start_three, try_http, wait_status, Proc, Ready, Scenario,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `error` code of a JSON error body, or the status code.
fn error_code(code: u16, body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("http_{code}"))
}

/// Clients writing unique keys and reading back acknowledged ones, at
/// QUORUM, spread over the nodes in `targets`.
struct Load {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    /// QUORUM reads that answered 404 for a key acknowledged before the
    /// read began.
    missed: Arc<Mutex<Vec<String>>>,
    ops: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(targets: Vec<SocketAddr>, clients: usize) -> Load {
        let mut load = Load {
            stop: Arc::default(),
            targets: Arc::new(Mutex::new(targets)),
            acked: Arc::default(),
            errors: Arc::default(),
            missed: Arc::default(),
            ops: Arc::default(),
            threads: Vec::new(),
        };
        for c in 0..clients {
            let (stop, targets, acked, errors, missed, ops) = (
                load.stop.clone(),
                load.targets.clone(),
                load.acked.clone(),
                load.errors.clone(),
                load.missed.clone(),
                load.ops.clone(),
            );
            load.threads.push(std::thread::spawn(move || {
                let mut turn = c;
                let mut next = || {
                    turn += 1;
                    let t = targets.lock().unwrap();
                    t[turn % t.len()]
                };
                let error = |e: String| *errors.lock().unwrap().entry(e).or_default() += 1;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (key, value) = (format!("c{c}-{i}"), format!("v{c}-{i}"));
                    // The same value again is harmless: a client retries
                    // a failed write on another node, up to 8 times.
                    for _ in 0..8 {
                        ops.fetch_add(1, Ordering::Relaxed);
                        let path = format!("/kv/{key}?consistency=quorum");
                        match try_http(next(), "PUT", &path, "", &value) {
                            Some((200, _)) => {
                                acked.lock().unwrap().push((key.clone(), value.clone()));
                                break;
                            }
                            Some((code, body)) => error(error_code(code, &body)),
                            None => error("no_answer".into()),
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if i % 4 == 0 {
                        // Read back a key acknowledged before this read began.
                        let pick = {
                            let a = acked.lock().unwrap();
                            (!a.is_empty()).then(|| a[(i as usize * 7919) % a.len()].clone())
                        };
                        if let Some((k, v)) = pick {
                            ops.fetch_add(1, Ordering::Relaxed);
                            let path = format!("/kv/{k}?consistency=quorum");
                            match try_http(next(), "GET", &path, "", "") {
                                Some((200, body)) if body == v => {}
                                Some((200, body)) => missed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{k}: read {body:?}, acked {v:?}")),
                                Some((404, body)) if error_code(404, &body) == "not_found" => {
                                    missed
                                        .lock()
                                        .unwrap()
                                        .push(format!("{k}: not found, acked {v:?}"))
                                }
                                Some((code, body)) => {
                                    error(format!("read_{}", error_code(code, &body)))
                                }
                                None => error("read_no_answer".into()),
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        load
    }

    fn set_targets(&self, t: Vec<SocketAddr>) {
        *self.targets.lock().unwrap() = t;
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// Members that have not left, all `Normal` and up, `n` of them; and
/// `left` members `Left`.
fn settled(s: &cassio_node::ClusterStatus, n: usize, left: usize) -> bool {
    let staying: Vec<_> = s.members.iter().filter(|m| m.state != "Left").collect();
    staying.len() == n
        && staying.iter().all(|m| m.up && m.state == "Normal")
        && s.members.iter().filter(|m| m.state == "Left").count() == left
}

/// Waits (up to `limit`) until every node in `nodes` sees `n` members
/// `Normal` and up and `left` members `Left`.
fn wait_all_settled(nodes: &[(Proc, Ready)], n: usize, left: usize, limit: Duration) {
    let what = format!("{n} Normal nodes, {left} Left");
    for (_, r) in nodes {
        wait_status(&what, r.client, limit, |s| settled(s, n, left));
    }
}

fn http_of(r: &Ready) -> SocketAddr {
    r.http.unwrap()
}

#[test]
fn grow_three_to_five_and_shrink_back_under_quorum_load() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Scenario {
        name: "elastic",
        transport: "tcp",
        store: "native",
    };
    let mut nodes = start_three(&sc, dir.path(), |_, _| {});
    let first = nodes[0].1.clone();
    let mut load = Load::start(nodes.iter().map(|(_, r)| http_of(r)).collect(), 3);
    std::thread::sleep(Duration::from_secs(3));

    // Grow: two new nodes join through node 1, with `--leave-on-exit` so
    // that stopping them later is a decommission.
    let grow_started = Instant::now();
    for i in 4..=5 {
        let mut args = node_args(&sc, dir.path(), i, Some(first.peer), None);
        args.push("--leave-on-exit".into());
        nodes.push(start_node(&format!("node{i}"), dir.path(), &args));
    }
    load.set_targets(nodes.iter().map(|(_, r)| http_of(r)).collect());
    wait_all_settled(&nodes, 5, 0, Duration::from_secs(120));
    let grown_in = grow_started.elapsed();
    let acked_at_grown = load.acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(3));

    // Shrink: nodes 4 and 5 leave at once.
    let shrink_started = Instant::now();
    load.set_targets(nodes[..3].iter().map(|(_, r)| http_of(r)).collect());
    let handles: Vec<_> = nodes
        .drain(3..)
        .map(|(mut p, _)| {
            std::thread::spawn(move || {
                let status = p.terminate_within(Duration::from_secs(180));
                (p, status)
            })
        })
        .collect();
    for h in handles {
        let (p, status) = h.join().unwrap();
        let log = p.log_text();
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{log}",
            p.name
        );
        assert!(
            log.contains("announcing Left"),
            "{} stopped without handing its ranges over; log:\n{log}",
            p.name
        );
    }
    wait_all_settled(&nodes, 3, 2, Duration::from_secs(60));
    let shrunk_in = shrink_started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    load.stop();

    // Every acknowledged write reads back at QUORUM from every node.
    let acked = load.acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (n, (k, v)) in acked.iter().enumerate() {
        let at = http_of(&nodes[n % nodes.len()].1);
        match try_http(at, "GET", &format!("/kv/{k}?consistency=quorum"), "", "") {
            Some((200, body)) if &body == v => {}
            other => lost.push(format!("{k}: {other:?}")),
        }
    }
    let errors = load.errors.lock().unwrap().clone();
    let missed = load.missed.lock().unwrap().clone();
    println!(
        "grow 3->5 in {grown_in:.1?} ({acked_at_grown} writes acknowledged by then), shrink 5->3 in {shrunk_in:.1?}; \
         {} requests, {} writes acknowledged, {} lost, {} QUORUM reads missed an acknowledged write; client errors (each retried): {errors:?}",
        load.ops.load(Ordering::Relaxed),
        acked.len(),
        lost.len(),
        missed.len()
    );
    assert!(
        acked.len() > 200,
        "too little load to mean anything: {} writes",
        acked.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        missed.is_empty(),
        "QUORUM reads missed acknowledged writes: {missed:?}"
    );
}
