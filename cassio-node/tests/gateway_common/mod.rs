//! A fake node for the gateway tests: a task answering `Command`s from an
//! in-memory map, so the gateways are tested without the real driver.
//!
//! Keys starting with `unavailable`, `timeout`, `badrequest`,
//! `replicafail` or `overloaded` fail with that error; a request at consistency `ALL` fails
//! with `Unavailable` (as one node of three would); every request seen is
//! recorded. Its status can be changed by the test (`Fake::status`); a
//! repair is accepted for keyspace `default` and for a member's address.

// Test helpers: a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use cassio_core::{
    ClientError, ClientOp, ClientRequest, ClientResponse, Consistency, NodeId, Timestamp,
};
use cassio_node::gateway::GatewayLimits;
use cassio_node::handle::Command;
use cassio_node::{
    ClusterStatus, MemberStatus, NodeHandle, RepairRequest, RepairStarted, RequestError,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// What the fake node has seen.
#[derive(Default)]
pub struct Seen {
    pub requests: Vec<ClientRequest>,
    pub repairs: Vec<RepairRequest>,
    pub schema_changes: Vec<cassio_core::schema::SchemaChange>,
}

/// A running fake node.
pub struct Fake {
    pub handle: NodeHandle,
    pub seen: Arc<Mutex<Seen>>,
    pub data: Arc<Mutex<HashMap<Bytes, Bytes>>>,
    pub status: Arc<Mutex<ClusterStatus>>,
}

pub fn status() -> ClusterStatus {
    ClusterStatus {
        local_id: 1,
        cluster: "test".into(),
        members: vec![MemberStatus {
            id: 1,
            addr: "127.0.0.1:7000".into(),
            state: "Normal".into(),
            up: true,
            load: 42,
            ownership: 1.0,
            generation: 7,
            repaired_through: 0,
            datacenter: "dc1".into(),
            rack: "rack1".into(),
        }],
        state: "Normal".into(),
        ready: true,
        ..ClusterStatus::default()
    }
}

fn repair(status: &ClusterStatus, req: &RepairRequest) -> Result<RepairStarted, RequestError> {
    if req.keyspace.as_deref().is_some_and(|k| k != "default") {
        return Err(RequestError::BadRequest("unknown keyspace".into()));
    }
    let node_id = match req.node {
        None => None,
        Some(a) => match status.members.iter().find(|m| m.addr == a.to_string()) {
            Some(m) => Some(m.id),
            None => return Err(RequestError::BadRequest(format!("no member at {a}"))),
        },
    };
    Ok(RepairStarted {
        keyspace: req.keyspace.clone(),
        node: req.node.map(|a| a.to_string()),
        node_id,
        queued: false,
        round: status.repair.rounds_ended + 1,
        repair: status.repair.clone(),
    })
}

/// Spawns the fake node on the current runtime.
pub fn spawn_fake() -> Fake {
    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let data: Arc<Mutex<HashMap<Bytes, Bytes>>> = Arc::default();
    let st = Arc::new(Mutex::new(status()));
    let (seen2, data2, st2) = (seen.clone(), data.clone(), st.clone());
    tokio::spawn(async move {
        let mut clock = 0u64;
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Status(reply) => {
                    let _ = reply.send(st2.lock().unwrap().clone());
                }
                // Not asked for through the gateways; dropping the reply
                // answers `NotRunning`.
                Command::Layout(_) => {}
                Command::Repair(req, reply) => {
                    let res = repair(&st2.lock().unwrap(), &req);
                    seen2.lock().unwrap().repairs.push(req);
                    let _ = reply.send(res);
                }
                // Three token owners with RF 3: a decommission is refused;
                // node 1 (this fake) is alive, 2 is dead, others unknown.
                Command::Decommission(reply) => {
                    let _ = reply.send(Err(cassio_node::RingOpError::Leave(
                        cassio_core::transition::LeaveError::TooFewNodes {
                            remaining: 2,
                            rf: 3,
                        },
                    )));
                }
                Command::RemoveDead(id, reply) => {
                    use cassio_core::transition::RemoveError;
                    let res = match id.0 {
                        1 => Err(RemoveError::Alive(id).into()),
                        2 => Ok(cassio_node::RemoveStarted {
                            node_id: 2,
                            requested_by: 1,
                        }),
                        _ => Err(RemoveError::Unknown(id).into()),
                    };
                    let _ = reply.send(res);
                }
                // Schema changes succeed at versions 1, 2, ...; creating
                // `taken` is refused as existing, anything on `ghost` as
                // unknown.
                Command::ChangeSchema(change, reply) => {
                    use cassio_core::schema::{SchemaChange, SchemaError};
                    use cassio_core::schema_agreement::ChangeError;
                    let refusal = match &change {
                        SchemaChange::Create { name, .. } if name == "taken" => {
                            Some(SchemaError::Exists(name.clone()))
                        }
                        SchemaChange::Alter { name, .. } | SchemaChange::Drop { name }
                            if name == "ghost" =>
                        {
                            Some(SchemaError::Unknown(name.clone()))
                        }
                        _ => None,
                    };
                    let mut seen = seen2.lock().unwrap();
                    seen.schema_changes.push(change);
                    let version = seen.schema_changes.len() as u64;
                    let res = match refusal {
                        Some(e) => {
                            Err(cassio_core::ClientError::Schema(ChangeError::Invalid(e)).into())
                        }
                        None => Ok(cassio_core::ClientResponse::SchemaChanged { version }),
                    };
                    let _ = reply.send(res);
                }
                Command::Request(req, reply) => {
                    seen2.lock().unwrap().requests.push(req.clone());
                    clock += 1;
                    let ts = Timestamp::new(clock, 0, NodeId(1));
                    let res = answer(&req, ts, &mut data2.lock().unwrap());
                    // Reads of `slow*` keys answer after 700 ms (longer
                    // than the idle timeouts the tests set).
                    let slow = matches!(&req.op, ClientOp::Get { key } if key.starts_with(b"slow"));
                    if slow {
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                            let _ = reply.send(res);
                        });
                    } else {
                        let _ = reply.send(res);
                    }
                }
            }
        }
    });
    Fake {
        handle: NodeHandle::new(tx),
        seen,
        data,
        status: st,
    }
}

/// A handle whose driver is gone.
pub fn dead_handle() -> NodeHandle {
    let (tx, rx) = mpsc::channel::<Command>(1);
    drop(rx);
    NodeHandle::new(tx)
}

fn answer(
    req: &ClientRequest,
    ts: Timestamp,
    data: &mut HashMap<Bytes, Bytes>,
) -> Result<ClientResponse, RequestError> {
    let key = req.op.key();
    if req.consistency == Some(Consistency::All) {
        return Err(ClientError::Unavailable {
            needed: 3,
            alive: 1,
        }
        .into());
    }
    if key.starts_with(b"unavailable") {
        return Err(ClientError::Unavailable {
            needed: 2,
            alive: 1,
        }
        .into());
    }
    if key.starts_with(b"timeout") {
        return Err(ClientError::Timeout {
            acked: 1,
            needed: 2,
        }
        .into());
    }
    if key.starts_with(b"replicafail") {
        return Err(ClientError::ReplicaFailure {
            acked: 0,
            failed: 2,
            needed: 2,
        }
        .into());
    }
    if key.starts_with(b"overloaded") {
        return Err(ClientError::Overloaded.into());
    }
    if key.starts_with(b"badrequest") {
        return Err(RequestError::BadRequest("refused by the fake".into()));
    }
    Ok(match &req.op {
        ClientOp::Get { key } => ClientResponse::Value(data.get(key).cloned()),
        // The fake keeps no expiries (the real node's tests cover them).
        ClientOp::GetEntry { key } => ClientResponse::Entry {
            value: data.get(key).cloned(),
            expires: None,
            now_micros: ts.micros,
        },
        ClientOp::Put { key, value } | ClientOp::PutExpiring { key, value, .. } => {
            data.insert(key.clone(), value.clone());
            ClientResponse::Written { ts }
        }
        ClientOp::Delete { key } => {
            data.remove(key);
            ClientResponse::Written { ts }
        }
        ClientOp::Scan {
            prefix,
            from,
            limit,
        } => {
            // Token order, as the cluster scans; one key per position.
            let pos = |k: &Bytes| (cassio_core::Token::of(k), Some(k.clone()));
            let start = (from.token, from.after.clone());
            let mut all: Vec<(Bytes, Bytes)> = data
                .iter()
                .filter(|(k, _)| k.starts_with(prefix) && pos(k) > start)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            all.sort_by_key(|(k, _)| pos(k));
            let next = (all.len() > *limit)
                .then(|| cassio_core::ScanCursor::after_key(all[*limit - 1].0.clone()));
            all.truncate(*limit);
            ClientResponse::Page { entries: all, next }
        }
        // Hashes are tested against a real node (tests/gateway_hash.rs):
        // the fake holds no rows (so `TYPE` of a missing key is `none`).
        ClientOp::ReadRow { .. } => ClientResponse::Cells {
            cells: Vec::new(),
            more: false,
            last: None,
        },
        _ => {
            return Err(RequestError::BadRequest(
                "the fake node keeps no cells".into(),
            ))
        }
    })
}

/// A gateway serving in the background, stopped on drop of `stop`.
pub struct Served {
    pub addr: std::net::SocketAddr,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Stops the gateway and checks it returns cleanly and promptly.
    pub async fn shutdown(self) {
        self.stop.send(true).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("gateway stops within 10 s")
            .expect("gateway task did not panic");
        res.expect("gateway returned Ok");
    }
}

/// Serves the RESP gateway for `handle` on a free loopback port.
pub async fn serve_resp(handle: NodeHandle) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::gateway::serve_resp(listener, handle, rx));
    Served { addr, stop, task }
}

/// Serves the RESP gateway for `handle` within `limits`.
pub async fn serve_resp_with(handle: NodeHandle, limits: GatewayLimits) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::gateway::serve_resp_with(
        listener, handle, rx, limits,
    ));
    Served { addr, stop, task }
}

/// Serves the HTTP gateway for `handle` within `limits`.
pub async fn serve_http_with(handle: NodeHandle, limits: GatewayLimits) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::gateway::serve_http_with(
        listener, handle, rx, limits,
    ));
    Served { addr, stop, task }
}

/// Serves the HTTP gateway for `handle` on a free loopback port.
pub async fn serve_http(handle: NodeHandle) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(cassio_node::gateway::serve_http(listener, handle, rx));
    Served { addr, stop, task }
}
