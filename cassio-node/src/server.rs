//! The native client protocol's server side (see [`crate::proto`]).
//!
//! Caps ([`GatewayLimits`]): at most `max_connections` connections; past
//! it a new connection's first request is answered
//! [`ClientError::Overloaded`] and the connection is closed (the client
//! library then tries its next node). Requests being served hold their
//! bytes against `max_query_buffer_bytes` per connection and
//! `max_total_query_buffer_bytes` for the port: when either is spent the
//! server stops reading that connection until answers free it
//! (back-pressure; a request here is always complete, so waiting cannot
//! deadlock). A frame is at most [`proto::MAX_FRAME`] bytes.

use crate::gateway::limits::{ConnectionSlots, GatewayLimits};
use crate::handle::{NodeHandle, RequestError};
use crate::proto::{self, Reply, Request, RequestOp, Response};
use cassio_core::{ClientError, ClientRequest, ClientResponse};
use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// Requests one connection may have in flight before the server stops
/// reading from it (back-pressure on a pipelining client).
const MAX_IN_FLIGHT_PER_CONN: usize = 256;

/// The largest first request a refused connection gets a typed answer to;
/// past it (or after [`REFUSAL_WAIT`]) it is simply closed.
const REFUSAL_MAX_FRAME: usize = 64 * 1024;
/// How long a refused connection is given to send its first request.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// The bytes a request holds while it is served, as the budgets count them.
fn request_bytes(op: &RequestOp) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + match op {
            RequestOp::Get { key, .. } | RequestOp::Del { key, .. } => key.len(),
            RequestOp::Set { key, value, .. } => key.len() + value.len(),
            RequestOp::Status | RequestOp::Ping => 0,
        }
}

/// Permits for `bytes` out of a budget of `max` (one request larger than
/// the whole budget takes all of it, so it still runs, alone).
fn permits(bytes: usize, max: usize) -> u32 {
    u32::try_from(bytes.min(max).max(1)).unwrap_or(u32::MAX)
}

/// Runs one request against the node.
pub async fn execute(handle: &NodeHandle, op: RequestOp) -> Result<Reply, crate::RequestError> {
    let req = match op {
        RequestOp::Get { key, consistency } => with_level(ClientRequest::get(key), consistency),
        RequestOp::Set {
            key,
            value,
            consistency,
        } => with_level(ClientRequest::put(key, value), consistency),
        RequestOp::Del { key, consistency } => with_level(ClientRequest::delete(key), consistency),
        RequestOp::Status => return handle.status().await.map(|s| Reply::Status(Box::new(s))),
        RequestOp::Ping => return Ok(Reply::Pong),
    };
    Ok(match handle.execute(req).await? {
        ClientResponse::Value(v) => Reply::Value(v),
        ClientResponse::Written { ts } => Reply::Written(ts),
    })
}

fn with_level(req: ClientRequest, level: Option<cassio_core::Consistency>) -> ClientRequest {
    match level {
        Some(l) => req.with_consistency(l),
        None => req,
    }
}

/// Serves the native protocol on `listener` until `shutdown` turns `true`
/// (or its sender is dropped); then stops accepting and closes connections.
pub async fn serve_client(
    listener: TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
) {
    serve_client_with(listener, handle, shutdown, GatewayLimits::default()).await
}

/// [`serve_client`] within `limits`.
pub async fn serve_client_with(
    listener: TcpListener,
    handle: NodeHandle,
    mut shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
) {
    let slots = ConnectionSlots::new(limits.max_connections);
    // Tokio's semaphores count up to usize::MAX >> 3, far above any memory.
    let total = limits
        .max_total_query_buffer_bytes
        .clamp(1, Semaphore::MAX_PERMITS);
    let total_budget = Arc::new(Semaphore::new(total));
    let budgets = Budgets {
        total: total_budget,
        total_max: total,
        conn_max: limits
            .max_query_buffer_bytes
            .clamp(1, Semaphore::MAX_PERMITS),
    };
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => match slots.admit("client") {
                    Some(slot) => {
                        let (handle, budgets) = (handle.clone(), budgets.clone());
                        conns.spawn(async move {
                            serve_conn(stream, from, handle, budgets).await;
                            drop(slot);
                        });
                    }
                    None => {
                        if let Some(permit) = slots.refusal() {
                            tokio::spawn(async move {
                                refuse(stream).await;
                                drop(permit);
                            });
                        }
                    }
                },
                Err(e) => {
                    // Usually out of file descriptors: back off, do not spin.
                    tracing::warn!(error = %e, "client accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

/// Answers the first request of a connection past `max_connections` with
/// `Overloaded`, then closes it.
async fn refuse(mut stream: TcpStream) {
    let first = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.ok()?;
        let len = u32::from_be_bytes(len) as usize;
        if len > REFUSAL_MAX_FRAME {
            return None;
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        proto::decode::<Request>(&body).ok()
    };
    let Ok(Some(req)) = tokio::time::timeout(REFUSAL_WAIT, first).await else {
        return;
    };
    let answer = Response {
        id: req.id,
        result: Err(RequestError::Client(ClientError::Overloaded)),
    };
    if let Ok(frame) = proto::encode(&answer) {
        let _ = tokio::time::timeout(REFUSAL_WAIT, stream.write_all(&frame)).await;
    }
    crate::gateway::limits::linger(&mut stream).await;
}

/// The port's byte budgets for requests being served.
#[derive(Clone)]
struct Budgets {
    total: Arc<Semaphore>,
    total_max: usize,
    conn_max: usize,
}

async fn serve_conn(stream: TcpStream, from: SocketAddr, handle: NodeHandle, budgets: Budgets) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let (tx, mut rx) = mpsc::channel::<Response>(MAX_IN_FLIGHT_PER_CONN);
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::new(wr);
        while let Some(resp) = rx.recv().await {
            if let Err(e) = proto::write_msg(&mut wr, &resp).await {
                tracing::debug!(client = %from, error = %e, "client write failed");
                return;
            }
            // Flush only when no other answer is ready, so pipelined
            // answers share a write.
            if rx.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
    });
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONN));
    let conn_bytes = Arc::new(Semaphore::new(budgets.conn_max));
    loop {
        let req: Request = match proto::read_msg(&mut rd).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                metrics::counter!("cassio_client_protocol_errors_total").increment(1);
                tracing::info!(client = %from, error = %e, "bad client frame: closing the connection");
                break;
            }
        };
        let bytes = request_bytes(&req.op);
        // Slot, then this connection's bytes, then the port's: waiting on
        // any of them stops reading this connection only.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let Ok(mine) = conn_bytes
            .clone()
            .acquire_many_owned(permits(bytes, budgets.conn_max))
            .await
        else {
            break;
        };
        let Ok(shared) = budgets
            .total
            .clone()
            .acquire_many_owned(permits(bytes, budgets.total_max))
            .await
        else {
            break;
        };
        let handle = handle.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = execute(&handle, req.op).await;
            let _ = tx.send(Response { id: req.id, result }).await;
            drop((slot, mine, shared));
        });
    }
    drop(tx);
    // Answers still being computed are delivered before the socket closes.
    let _ = writer.await;
}
