//! Client gateways in front of a running node: RESP (any Redis client),
//! HTTP (curl, `/status`, `/metrics`), and the Prometheus recorder.
//!
//! Both gateways reach the node only through a [`NodeHandle`], so they work
//! the same in front of the real driver or a test double. Both stop when
//! `true` is sent on their shutdown watch (or when its sender is dropped):
//! they stop accepting, let in-flight requests finish, and return.
//!
//! Metrics the gateways record (labels in braces):
//! - `cassio_gateway_requests_total{protocol, op, result}`: one per request
//!   sent to the node (`op` is `get`, `put` or `delete`; `result` is `ok`,
//!   `unavailable`, `timeout`, `replica_failure`, `bad_request`,
//!   `not_running`, `overloaded` or `error`).
//! - `cassio_gateway_request_duration_seconds{protocol, op}`: their latency.
//! - `cassio_gateway_connections{protocol}`: open RESP connections (gauge).
//! - the caps' refusals, listed in [`limits`].
//! - the node's repair, hint and state figures, copied from its status when
//!   `/metrics` is scraped (listed in `node_metrics`): `cassio_node_syncing`,
//!   `cassio_hints_*`, `cassio_repair_*`.
//!
//! A node that is overloaded ([`ClientError::Overloaded`]) is reported as
//! such by every gateway, so clients back off: RESP `-BUSY ...`, HTTP 503
//! with `Retry-After`, the native protocol's typed error.

pub use crate::auth::ClientSecurity;
use crate::handle::{NodeHandle, RequestError};
use cassio_core::{ClientError, ClientRequest, ClientResponse};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub mod http;
pub mod limits;
pub(crate) mod metrics_install;
mod node_metrics;
pub mod resp;
mod resp3;
mod resp_proto;
pub(crate) mod rows;

pub use limits::GatewayLimits;
pub use metrics_install::{install_metrics, MetricsError};

/// The largest key the gateways accept. It matches the native store's limit,
/// so a key the gateway lets through is never refused by storage.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// The largest value the gateways accept. A replicated write travels in one
/// peer frame, capped at [`cassio_core::wire::DEFAULT_MAX_FRAME`] (16 MiB)
/// with the key and envelope, so values stay a margin below it.
pub const MAX_VALUE_BYTES: usize = 15 * 1024 * 1024;

/// Serves the Redis protocol (RESP2, and RESP3 after `HELLO 3`) on `listener` until `shutdown` turns
/// `true`; see [`resp`] for the commands.
pub async fn serve_resp(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    resp::serve(
        listener,
        handle,
        shutdown,
        GatewayLimits::default(),
        ClientSecurity::default(),
    )
    .await
}

/// [`serve_resp`] with the given caps.
pub async fn serve_resp_with(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
) -> std::io::Result<()> {
    resp::serve(
        listener,
        handle,
        shutdown,
        limits,
        ClientSecurity::default(),
    )
    .await
}

/// [`serve_resp_with`] with users and TLS ([`crate::auth`]).
pub async fn serve_resp_secured(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
    security: ClientSecurity,
) -> std::io::Result<()> {
    resp::serve(listener, handle, shutdown, limits, security).await
}

/// Serves the HTTP API (`/kv/{key}`, `/health`, `/status`, `/metrics`) on
/// `listener` until `shutdown` turns `true`; see [`http`] for the routes.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    http::serve(
        listener,
        handle,
        shutdown,
        GatewayLimits::default(),
        ClientSecurity::default(),
    )
    .await
}

/// [`serve_http`] with the given caps (HTTP uses `max_connections`).
pub async fn serve_http_with(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
) -> std::io::Result<()> {
    http::serve(
        listener,
        handle,
        shutdown,
        limits,
        ClientSecurity::default(),
    )
    .await
}

/// [`serve_http_with`] with users and TLS ([`crate::auth`]).
pub async fn serve_http_secured(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
    security: ClientSecurity,
) -> std::io::Result<()> {
    http::serve(listener, handle, shutdown, limits, security).await
}

/// Resolves once `true` is on the watch or its sender is gone: a node whose
/// owner dropped the sender is going away, so serving on would only produce
/// `NotRunning` errors.
pub(crate) async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// How long a stopping gateway waits for in-flight connections before it
/// drops them: requests themselves time out in the coordinator, so this only
/// bounds clients that stopped reading their answers.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The index of a request's operation in [`metrics_install::OPS`].
pub(crate) fn op_index(req: &ClientRequest) -> usize {
    match req.op {
        // Cell ops count with the key ops they resemble.
        cassio_core::ClientOp::Get { .. }
        | cassio_core::ClientOp::GetEntry { .. }
        | cassio_core::ClientOp::GetCell { .. }
        | cassio_core::ClientOp::ReadRow { .. } => 0,
        cassio_core::ClientOp::Put { .. }
        | cassio_core::ClientOp::PutExpiring { .. }
        | cassio_core::ClientOp::PutCell { .. }
        | cassio_core::ClientOp::Cas { .. }
        | cassio_core::ClientOp::Incr { .. } => 1,
        cassio_core::ClientOp::Delete { .. } | cassio_core::ClientOp::DeleteCell { .. } => 2,
        cassio_core::ClientOp::Scan { .. } => 3,
    }
}

/// The index of an answer's result label in [`metrics_install::RESULTS`].
pub(crate) fn result_index(res: &Result<ClientResponse, RequestError>) -> usize {
    match res {
        Ok(_) => 0,
        Err(RequestError::Client(e)) => match e {
            ClientError::Unavailable { .. } => 1,
            ClientError::Timeout { .. } => 2,
            ClientError::ReplicaFailure { .. } => 3,
            ClientError::UnknownKeyspace(_) | ClientError::InvalidConsistency { .. } => 4,
            ClientError::ShuttingDown | ClientError::Joining => 5,
            ClientError::Overloaded => 7,
            _ => 6,
        },
        Err(RequestError::NotRunning) => 5,
        Err(RequestError::BadRequest(_)) => 4,
        Err(RequestError::Unauthorized(_)) => 6,
    }
}

/// A gateway, as the `protocol` metrics label names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Protocol {
    /// The RESP gateway.
    Resp = 0,
    /// The HTTP gateway.
    Http = 1,
}

/// Runs one request on the node and records its count and latency.
pub(crate) async fn execute(
    handle: &NodeHandle,
    protocol: Protocol,
    req: ClientRequest,
) -> Result<ClientResponse, RequestError> {
    let op = op_index(&req);
    let start = Instant::now();
    let res = handle.execute(req).await;
    let secs = start.elapsed().as_secs_f64();
    let result = result_index(&res);
    let p = protocol as usize;
    match metrics_install::Handles::get() {
        Some(h) => {
            if let Some(c) = h.request(p, op, result) {
                c.increment(1);
            }
            if let Some(d) = h.duration(p, op) {
                d.record(secs);
            }
        }
        None => {
            use metrics_install::{OPS, PROTOCOLS, RESULTS};
            metrics::counter!(
                "cassio_gateway_requests_total",
                "protocol" => PROTOCOLS[p],
                "op" => OPS[op],
                "result" => RESULTS[result]
            )
            .increment(1);
            metrics::histogram!(
                "cassio_gateway_request_duration_seconds",
                "protocol" => PROTOCOLS[p],
                "op" => OPS[op]
            )
            .record(secs);
        }
    }
    res
}

/// Why a key or value cannot be sent to the node, checked before it is.
pub(crate) fn check_key(key: &[u8]) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes",
            key.len()
        ));
    }
    Ok(())
}

/// Like [`check_key`], for values.
pub(crate) fn check_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value of {} bytes exceeds the limit of {MAX_VALUE_BYTES} bytes",
            value.len()
        ));
    }
    Ok(())
}
