//! The native client protocol's server side (see [`crate::proto`]).

use crate::handle::NodeHandle;
use crate::proto::{self, Reply, Request, RequestOp, Response};
use cassio_core::{ClientRequest, ClientResponse};
use core::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// Requests one connection may have in flight before the server stops
/// reading from it (back-pressure on a pipelining client).
const MAX_IN_FLIGHT_PER_CONN: usize = 256;

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
        RequestOp::Status => return handle.status().await.map(Reply::Status),
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
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    conns.spawn(serve_conn(stream, from, handle.clone()));
                }
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

async fn serve_conn(stream: TcpStream, from: SocketAddr, handle: NodeHandle) {
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
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONN));
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
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let handle = handle.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = execute(&handle, req.op).await;
            let _ = tx.send(Response { id: req.id, result }).await;
            drop(permit);
        });
    }
    drop(tx);
    // Answers still being computed are delivered before the socket closes.
    let _ = writer.await;
}
