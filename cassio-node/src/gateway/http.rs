//! The HTTP gateway (axum, HTTP/1.1).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | the web console: one self-contained HTML page (no external assets) that reads `/status` every 2 s and draws the members, the ring, requests, repair, hints and keyspaces; read-only |
//! | `GET /kv/{key}` | 200 with the value's bytes, or 404 |
//! | `PUT` or `POST /kv/{key}` | stores the request body as the value; 200 `{"ok":true,"timestamp":...}` |
//! | `DELETE /kv/{key}` | writes a tombstone; 200 `{"ok":true,"timestamp":...}` |
//! | `GET`/`PUT /kv/{key}` on a craq keyspace (and `/ks/{keyspace}/kv/{key}`) | `GET` adds a strong `ETag: "<hex of the value>"`; `PUT` with `If-Match: "<hex>"` sets the value only if the current one is that (compare-and-set), with `If-None-Match: *` only if the key is absent: 200 `{"ok":true,"swapped":true}` or 412 `precondition_failed`; a malformed `If-Match` is 400 (see `http/conditional.rs`) |
//! | `POST /incr/{key}?by=N` (and `/ks/{keyspace}/incr/{key}`) | adds `N` (default 1, may be negative) to the key's decimal integer value on a craq keyspace; 200 `{"ok":true,"value":NEW}`; 400 `invalid_op` on a last-write-wins keyspace or a value that is no integer |
//! | `GET /kv?prefix=P&after=K&cursor=C&limit=N` (and `/ks/{keyspace}/kv?...`) | a page of a scan, in token order: 200 `{"entries":[{"key","value"}...],"count":N,"cursor":C\|null}` (see `http/scan.rs`) |
//! | `GET /health` | 200 `{"status":"ok"}` while the node runs, else 503 |
//! | `GET /ready` | 200 `{"status":"ready","state":"Normal"}` when the node coordinates requests (its view settled, a restart heard from a majority) and its state is `Normal`; otherwise 503 `{"status":"not_ready","state":...,"ready":...}` (`Joining`, `Syncing`, `Leaving`, waiting after a restart, stopped). For load balancers and Kubernetes readiness probes |
//! | `GET /status` | the cluster as this node sees it (`ClusterStatus` as JSON: members, this node's state, repair and hint figures, keyspaces, request rate and p99 per operation) |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /admin/repair` | starts an anti-entropy round now; `?keyspace=K` limits it to one keyspace, `?node=IP:PORT` (a peer's listen address) to exchanges with one peer; 202 with `RepairStarted` as JSON |
//! | `POST /admin/decommission` | this node starts leaving (`Leaving`, keeps serving while the nodes gaining its ranges sync them, then announces `Left` and its process stops); 202 with `DecommissionStarted` as JSON; 409 `too_few_nodes` or `not_an_owner` when refused (the node keeps running) |
//! | `GET /openapi.json` | this API as an OpenAPI 3 document (`http/openapi.json`, checked against these routes by a test) |
//! | `POST /admin/remove?node=ID` | asks the cluster to take dead member `ID` (the Node ID column of `cassio status`) off the ring, its ranges re-replicated among the rest first; 202 with `RemoveStarted` as JSON; 400 `bad_request` (no or bad id) or `unknown_node`; 409 `alive`, `itself` or `too_few_nodes` |
//!
//! The key is the rest of the path after `/kv/`, percent-decoded to bytes,
//! so any byte string can be a key; a slash in a key travels as `%2F`,
//! because an unencoded one starts a column: `/kv/{row}/{column}` is one
//! cell of a row (see `http/cells.rs`); the HTTP stack's
//! URI limit (64 KiB) keeps keys within [`super::MAX_KEY_BYTES`]. `?consistency=one|
//! two|three|quorum|all` picks the level (default: the keyspace's).
//!
//! Every error is JSON, `{"error": "<code>", "message": "<text>"}`, with
//! its status: 400 `bad_request` (bad consistency or query, refused by the
//! node), 404 `not_found` (absent key or unknown route), 405
//! `method_not_allowed`, 413 `too_large` (value over
//! [`super::MAX_VALUE_BYTES`]), 500 `replica_failure`/`internal`, 503
//! `unavailable` (too few replicas alive), `not_running` or `overloaded`
//! (with `Retry-After`: back off, then retry), `chain_changing` (a craq
//! key's chain is reconfiguring, or the node just started: nothing was
//! done; `Retry-After: 1`), 504 `timeout`; 400 `invalid_op` for an
//! operation the keyspace does not offer.
//!
//! At most `max_connections` ([`GatewayLimits`]) connections are served at
//! once; past it a new connection is answered 503 `too_many_connections`
//! with `Retry-After` and closed. A connection that sends nothing for
//! `idle_timeout` is closed (`cassio_gateway_idle_closes_total{protocol}`);
//! bodies are capped at [`super::MAX_VALUE_BYTES`] (413) and headers by
//! the HTTP stack, so no connection buffers without bound.
//!
//! Authentication (when the node has users, see [`crate::auth`]): every
//! route but `/health` and `/ready` (probes) needs `Authorization: Basic` (user and password) or
//! `Authorization: Bearer USER:TOKEN` (the token whose argon2 hash is the
//! user's `token_hash`). Missing or wrong credentials: 401 `unauthorized`
//! with `WWW-Authenticate` (the same message whether the user exists or
//! not). `GET /kv` needs read access to the keyspace (`default`), writes,
//! deletes and `POST /incr` read-write access, `/admin/*` a user with `admin = true`;
//! `/`, `/status` and `/metrics` any user. Refusals: 403 `forbidden`.
//!
//! TLS (when the node has a client certificate): the port speaks only
//! HTTPS (`curl --cacert ca.pem https://...`).

mod cells;
mod conditional;
mod expiry;
mod keyspaces;
mod openapi;
mod scan;

use super::limits::{ConnectionSlots, GatewayLimits};
use super::{check_key, execute, shutdown_signal, Protocol, DRAIN_TIMEOUT};
use crate::auth::{AuthError, Authenticator, ClientSecurity, Secret};
use crate::handle::{NodeHandle, RepairRequest, RequestError, RingOpError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cassio_core::{ClientError, ClientRequest, ClientResponse, Consistency};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit};

/// The `protocol` label of this gateway's metrics.
const PROTOCOL: Protocol = Protocol::Http;

/// What every handler shares.
#[derive(Clone)]
struct Gateway {
    handle: NodeHandle,
    metrics: Option<PrometheusHandle>,
    reported: std::sync::Arc<super::node_metrics::Reported>,
}

/// How long `/metrics` waits for the node's status before rendering the
/// figures it last had (a scrape must not hang on a stalled driver).
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The HTTP API as a router, for embedding in another axum server. `/metrics`
/// answers 503 when `metrics` is `None`.
pub fn router(handle: NodeHandle, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/kv", get(scan::scan_default))
        .route("/ks/{keyspace}/kv", get(scan::scan_keyspace_route))
        .route(
            "/kv/{*key}",
            get(get_kv).put(put_kv).post(put_kv).delete(delete_kv),
        )
        .route(
            "/ks/{keyspace}/kv/{*key}",
            get(get_kv).put(put_kv).post(put_kv).delete(delete_kv),
        )
        .route("/incr/{*key}", post(incr_kv))
        .route("/ks/{keyspace}/incr/{*key}", post(incr_kv))
        .route(
            "/admin/keyspaces",
            get(keyspaces::list).post(keyspaces::create),
        )
        .route(
            "/admin/keyspaces/{name}",
            axum::routing::patch(keyspaces::alter).delete(keyspaces::drop),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(render_metrics))
        .route("/admin/repair", post(admin_repair))
        .route("/admin/decommission", post(admin_decommission))
        .route("/admin/remove", post(admin_remove))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Past this, axum refuses the body with 413 before reading it all.
        .layer(DefaultBodyLimit::max(super::MAX_VALUE_BYTES))
        .with_state(Gateway {
            handle,
            metrics,
            reported: Default::default(),
        })
}

/// [`router`] behind the users of `auth` (open to anyone when `None`).
pub fn router_secured(
    handle: NodeHandle,
    metrics: Option<PrometheusHandle>,
    auth: Option<Arc<Authenticator>>,
) -> Router {
    let app = router(handle, metrics);
    match auth {
        Some(auth) => app.layer(axum::middleware::from_fn_with_state(auth, require_auth)),
        None => app,
    }
}

/// What a request needs of its user.
enum Need {
    Nothing,
    AnyUser,
    Read(String),
    Write(String),
    Admin,
}

fn need(req: &Request) -> Need {
    let path = req.uri().path();
    // Probes (load balancers, Kubernetes) carry no credentials; they learn
    // only whether the node runs and whether it serves.
    if path == "/health" || path == "/ready" {
        Need::Nothing
    } else if let Some(keyspace) = scan::scan_keyspace(path) {
        Need::Read(keyspace)
    } else if let Some((keyspace, _)) = keyspace_and_key(path) {
        match *req.method() {
            axum::http::Method::GET | axum::http::Method::HEAD => Need::Read(keyspace),
            _ => Need::Write(keyspace),
        }
    } else if let Some((keyspace, _)) = conditional::incr_path(path) {
        // An increment reads and writes: read-write access.
        Need::Write(keyspace)
    } else if path.starts_with("/admin/") {
        Need::Admin
    } else {
        Need::AnyUser
    }
}

/// The 401 answer: the same for a missing header, an unknown user and a
/// wrong secret.
fn unauthorized(message: impl std::fmt::Display) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"cassio\", charset=\"UTF-8\""),
    );
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"cassio\""),
    );
    r
}

/// The user name, secret and kind in an `Authorization` header.
fn credentials(value: &str) -> Option<(String, String, Secret)> {
    use base64::Engine;
    let (scheme, rest) = value.trim().split_once(' ')?;
    let (decoded, kind) = if scheme.eq_ignore_ascii_case("basic") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        (String::from_utf8(bytes).ok()?, Secret::Password)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        (rest.trim().to_owned(), Secret::Token)
    } else {
        return None;
    };
    let (user, secret) = decoded.split_once(':')?;
    Some((user.to_owned(), secret.to_owned(), kind))
}

/// Lets a request through when its credentials name a user allowed to
/// make it.
async fn require_auth(
    State(auth): State<Arc<Authenticator>>,
    req: Request,
    next: Next,
) -> Response {
    let need = need(&req);
    if matches!(need, Need::Nothing) {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return unauthorized(AuthError::Required);
    };
    let Some((name, secret, kind)) = value.to_str().ok().and_then(credentials) else {
        return unauthorized(
            "malformed Authorization header: expected Basic base64(user:password) or Bearer user:token",
        );
    };
    let user = match auth.login(&name, &secret, kind, "http", "-").await {
        Ok(u) => u,
        Err(e) => return unauthorized(e),
    };
    let checked = match need {
        Need::Nothing | Need::AnyUser => Ok(()),
        Need::Read(ks) => Authenticator::check(&user, &ks, false),
        Need::Write(ks) => Authenticator::check(&user, &ks, true),
        Need::Admin => Authenticator::check_admin(&user),
    };
    match checked {
        Ok(()) => next.run(req).await,
        Err(e) => error(StatusCode::FORBIDDEN, "forbidden", e),
    }
}

/// Seconds a client is asked to wait before retrying an overloaded node.
const RETRY_AFTER_SECS: &str = "1";

/// The whole answer to a connection past `max_connections`.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 87\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"max number of clients reached; retry later\"}";

/// A listener that serves at most `max_connections` connections at once,
/// over TLS when it has an acceptor.
struct CappedListener {
    inner: TcpListener,
    slots: ConnectionSlots,
    tls: Option<tokio_rustls::TlsAcceptor>,
    idle: Option<std::time::Duration>,
    /// TLS handshakes under way (run beside accepting, so a slow client
    /// cannot hold the others up).
    handshakes: tokio::task::JoinSet<Option<(Admitted, core::net::SocketAddr)>>,
}

/// What a connection is carried over: TCP, or TLS over TCP.
trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// A connection holding its slot until it closes, closed when it stays
/// silent for `idle`.
struct Admitted {
    sock: Box<dyn ClientIo>,
    _slot: OwnedSemaphorePermit,
    idle: Option<std::time::Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    in_flight: InFlight,
}

/// How many of a connection's requests are being handled. hyper polls the
/// socket while a handler runs (to notice a client that went away), so
/// without this a slow request (an argon2 login on a loaded machine, a
/// write at ALL) would count as silence and be cut off by the idle timer.
#[derive(Clone, Debug, Default)]
struct InFlight(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn busy(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire) > 0
    }
}

/// Counts one request from its start until its handler answered.
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CappedListener>>
    for InFlight
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CappedListener>) -> Self {
        stream.io().in_flight.clone()
    }
}

/// Marks the connection busy while its request is handled.
async fn count_in_flight(
    axum::extract::ConnectInfo(in_flight): axum::extract::ConnectInfo<InFlight>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    in_flight
        .0
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let _guard = InFlightGuard(in_flight);
    next.run(req).await
}

impl Admitted {
    fn new(
        sock: Box<dyn ClientIo>,
        slot: OwnedSemaphorePermit,
        idle: Option<std::time::Duration>,
    ) -> Self {
        Admitted {
            sock,
            _slot: slot,
            idle,
            timer: idle.map(|d| Box::pin(tokio::time::sleep(d))),
            in_flight: InFlight::default(),
        }
    }

    /// The connection did something: its idle time starts again.
    fn touch(&mut self) {
        if let (Some(t), Some(d)) = (self.timer.as_mut(), self.idle) {
            t.as_mut().reset(tokio::time::Instant::now() + d);
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Admitted;
    type Addr = core::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let mut backoff = std::time::Duration::from_millis(5);
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(admitted)) = done {
                        return admitted;
                    }
                }
                accepted = self.inner.accept() => match accepted {
                    Ok((sock, addr)) => {
                        backoff = std::time::Duration::from_millis(5);
                        let _ = sock.set_nodelay(true);
                        match (self.slots.admit("http"), &self.tls) {
                            (Some(slot), None) => {
                                return (Admitted::new(Box::new(sock), slot, self.idle), addr)
                            }
                            (Some(slot), Some(tls)) => {
                                let (tls, idle) = (tls.clone(), self.idle);
                                self.handshakes.spawn(async move {
                                    let hs = tokio::time::timeout(
                                        crate::auth::TLS_HANDSHAKE_TIMEOUT,
                                        tls.accept(sock),
                                    );
                                    match hs.await {
                                        Ok(Ok(s)) => Some((Admitted::new(Box::new(s), slot, idle), addr)),
                                        _ => None,
                                    }
                                });
                            }
                            (None, None) => self.slots.refuse(sock, TOO_MANY_CONNECTIONS),
                            (None, Some(tls)) => {
                                if let Some(permit) = self.slots.refusal() {
                                    let tls = tls.clone();
                                    tokio::spawn(async move {
                                        let hs = tokio::time::timeout(
                                            crate::auth::TLS_HANDSHAKE_TIMEOUT,
                                            tls.accept(sock),
                                        );
                                        if let Ok(Ok(s)) = hs.await {
                                            super::limits::write_and_linger(s, TOO_MANY_CONNECTIONS).await;
                                        }
                                        drop(permit);
                                    });
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // Out of descriptors and similar: transient.
                        tracing::warn!(error = %e, "HTTP gateway accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.sock).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.in_flight.busy() {
                    // Not silence: the client waits for its answer (whose
                    // writes restart the idle time when it comes).
                    self.touch();
                    return Poll::Pending;
                }
                let expired = self
                    .timer
                    .as_mut()
                    .is_some_and(|t| std::future::Future::poll(t.as_mut(), cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                metrics::counter!("cassio_gateway_idle_closes_total", "protocol" => "http")
                    .increment(1);
                self.timer = None;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle timeout (idle_timeout)",
                )))
            }
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.sock).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.sock).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.sock).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.sock).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.sock.is_write_vectored()
    }
}

/// Serves the HTTP API on `listener` until `shutdown` turns `true`, then
/// finishes in-flight requests (for at most a few seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
    security: ClientSecurity,
) -> std::io::Result<()> {
    let metrics = match super::install_metrics() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "/metrics is disabled");
            None
        }
    };
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        tls = security.tls.is_some(),
        auth = security.auth.is_some(),
        "HTTP gateway listening"
    );
    let app = router_secured(handle, metrics, security.auth);
    let listener = CappedListener {
        inner: listener,
        slots: ConnectionSlots::new(limits.max_connections),
        tls: security.tls,
        idle: limits.idle_timeout,
        handshakes: tokio::task::JoinSet::new(),
    };
    let app = app
        .layer(axum::middleware::from_fn(count_in_flight))
        .into_make_service_with_connect_info::<InFlight>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(shutdown.clone()))
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        () = shutdown_signal(shutdown) => {}
    }
    // Stopped accepting; connections finish their current request. A client
    // that never reads its answer must not hold the node's shutdown.
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(addr = %local, "HTTP connections still busy after the drain timeout; dropping them");
            Ok(())
        }
    }
}

/// A JSON error answer.
fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.to_string() })),
    )
        .into_response()
}

/// The answer to a failed node request.
fn request_error(e: &RequestError) -> Response {
    let (status, code) = match e {
        RequestError::Client(c) => match c {
            ClientError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ClientError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ClientError::ReplicaFailure { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "replica_failure")
            }
            ClientError::UnknownKeyspace(_) | ClientError::InvalidConsistency { .. } => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            ClientError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "not_running"),
            ClientError::Joining => (StatusCode::SERVICE_UNAVAILABLE, "joining"),
            // This node cannot coordinate; another may.
            ClientError::ClockOffset { .. } => (StatusCode::SERVICE_UNAVAILABLE, "clock_offset"),
            ClientError::ConfigMismatch { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "config_mismatch")
            }
            ClientError::Contended { .. } => (StatusCode::CONFLICT, "contended"),
            ClientError::InvalidScan(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            // Not for this keyspace or value (compare-and-set or increments
            // on a last-write-wins keyspace, a TTL on a craq one, an
            // increment of a value that is no integer).
            ClientError::InvalidOp(_) => (StatusCode::BAD_REQUEST, "invalid_op"),
            ClientError::ChainChanging => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "chain_changing", e);
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(RETRY_AFTER_SECS),
                );
                return r;
            }
            ClientError::Schema(s) => keyspaces::schema_error_status(s),
            ClientError::Overloaded => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e);
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(RETRY_AFTER_SECS),
                );
                return r;
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        },
        RequestError::NotRunning => (StatusCode::SERVICE_UNAVAILABLE, "not_running"),
        RequestError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        RequestError::Unauthorized(_) => (StatusCode::FORBIDDEN, "forbidden"),
    };
    error(status, code, e)
}

/// The query parameters `/kv` understands; others are ignored.
#[derive(Debug, Deserialize)]
struct KvParams {
    consistency: Option<String>,
    /// Seconds a written value lives (`expiry.rs`).
    ttl: Option<String>,
}

/// The key from the path and the level from the query, or the error answer.
/// The keyspace and the raw (still percent-encoded) key of a data path:
/// `/kv/{key}` (keyspace `default`) or `/ks/{keyspace}/kv/{key}`.
fn keyspace_and_key(path: &str) -> Option<(String, &str)> {
    if let Some(raw) = path.strip_prefix("/kv/") {
        return Some((cassio_core::DEFAULT_KEYSPACE.to_string(), raw));
    }
    let rest = path.strip_prefix("/ks/")?;
    let (ks, raw) = rest.split_once("/kv/")?;
    let ks = percent_encoding::percent_decode(ks.as_bytes())
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((ks, raw))
}

/// Splits the raw (still percent-encoded) path after `/kv/` into the key
/// (or row) and, after its first unencoded `/`, a column: `/kv/{row}/{column}`
/// addresses one cell, so a key's own slashes travel as `%2F`.
pub(super) fn split_row_column(raw: &str) -> (&str, Option<&str>) {
    match raw.split_once('/') {
        Some((row, column)) => (row, Some(column)),
        None => (raw, None),
    }
}

/// The request a data path names, its keyspace set, at the level asked.
fn key_and_level(
    uri: &Uri,
    params: Result<Query<KvParams>, QueryRejection>,
) -> Result<(String, Bytes, Option<Consistency>), Box<Response>> {
    key_level_ttl(uri, params).map(|(ks, key, level, _)| (ks, key, level))
}

/// [`key_and_level`] and the `ttl` parameter, checked.
#[allow(clippy::type_complexity)]
fn key_level_ttl(
    uri: &Uri,
    params: Result<Query<KvParams>, QueryRejection>,
) -> Result<
    (
        String,
        Bytes,
        Option<Consistency>,
        Option<cassio_core::Expiry>,
    ),
    Box<Response>,
> {
    let Some((keyspace, raw)) = keyspace_and_key(uri.path()) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "keyspace names are UTF-8: /ks/{keyspace}/kv/{key}",
        )));
    };
    // A cell's path ends in `/{column}`; the key is its row.
    let (raw, _) = split_row_column(raw);
    let key: Vec<u8> = percent_encoding::percent_decode(raw.as_bytes()).collect();
    check_key(&key).map_err(|e| Box::new(error(StatusCode::URI_TOO_LONG, "key_too_large", e)))?;
    let Query(params) = params
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "bad_request", e.body_text())))?;
    let level = match params.consistency {
        None => None,
        Some(s) => Some(
            s.parse::<Consistency>()
                .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "bad_request", e)))?,
        ),
    };
    let ttl = expiry::parse(params.ttl.as_deref())?;
    Ok((keyspace, Bytes::from(key), level, ttl))
}

/// The answer to a successful write.
fn written(res: Result<ClientResponse, RequestError>) -> Response {
    match res {
        Ok(ClientResponse::Written { ts }) => {
            Json(json!({ "ok": true, "timestamp": ts })).into_response()
        }
        Ok(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered a write with a value",
        ),
        Err(e) => request_error(&e),
    }
}

async fn get_kv(
    State(gw): State<Gateway>,
    uri: Uri,
    params: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    if let Some(r) = cells::get(&gw, &uri).await {
        return r;
    }
    let (keyspace, key, level) = match key_and_level(&uri, params) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    // Read with the expiry, for the `Cassio-TTL` header.
    let mut req = ClientRequest::get_entry(key.clone()).in_keyspace(keyspace.clone());
    req.consistency = level;
    let res = match execute(&gw.handle, PROTOCOL, req).await {
        // A craq keyspace keeps no expiries (and refuses that read, before
        // sending anything): a plain read, and its value's ETag.
        Err(RequestError::Client(ClientError::InvalidOp(_))) => {
            let mut req = ClientRequest::get(key).in_keyspace(keyspace);
            req.consistency = level;
            return match execute(&gw.handle, PROTOCOL, req).await {
                Ok(ClientResponse::Value(Some(v))) => {
                    let tag = conditional::etag(&v);
                    let mut r =
                        ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response();
                    if let Some(tag) = tag {
                        r.headers_mut().insert(header::ETAG, tag);
                    }
                    r
                }
                Ok(ClientResponse::Value(None)) => {
                    error(StatusCode::NOT_FOUND, "not_found", "key not found")
                }
                Ok(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the node answered a read with something else than a value",
                ),
                Err(e) => request_error(&e),
            };
        }
        other => other,
    };
    match res {
        Ok(ClientResponse::Entry {
            value: Some(v),
            expires,
            now_micros,
        }) => {
            let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response();
            if let Some((name, value)) = expiry::header(expires, now_micros) {
                r.headers_mut().insert(name, value);
            }
            r
        }
        Ok(ClientResponse::Value(Some(v))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()
        }
        Ok(ClientResponse::Value(None) | ClientResponse::Entry { value: None, .. }) => {
            error(StatusCode::NOT_FOUND, "not_found", "key not found")
        }
        Ok(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered a read with a write acknowledgement",
        ),
        Err(e) => request_error(&e),
    }
}

async fn put_kv(
    State(gw): State<Gateway>,
    uri: Uri,
    params: Result<Query<KvParams>, QueryRejection>,
    headers: header::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let condition = match conditional::parse(&headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let (keyspace, key, level, ttl) = match key_level_ttl(&uri, params) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let value = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "value exceeds the limit of {} bytes",
                    super::MAX_VALUE_BYTES
                ),
            )
        }
        Err(e) => return error(e.status(), "bad_request", e.body_text()),
    };
    if let Some(expected) = condition {
        return conditional::put(&gw, &uri, keyspace, key, expected, value, ttl.is_some()).await;
    }
    if let Some(r) = cells::write(&gw, &uri, Some(value.clone())).await {
        return r;
    }
    let req = match ttl {
        None => ClientRequest::put(key, value),
        Some(e) => ClientRequest::put_expiring(key, value, e),
    };
    let mut req = req.in_keyspace(keyspace);
    req.consistency = level;
    written(execute(&gw.handle, PROTOCOL, req).await)
}

/// `POST /incr/{key}?by=N` and `/ks/{keyspace}/incr/{key}?by=N`.
async fn incr_kv(State(gw): State<Gateway>, uri: Uri) -> Response {
    conditional::incr(&gw, &uri).await
}

async fn delete_kv(
    State(gw): State<Gateway>,
    uri: Uri,
    params: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    let (keyspace, key, level) = match key_and_level(&uri, params) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    if let Some(r) = cells::write(&gw, &uri, None).await {
        return r;
    }
    let mut req = ClientRequest::delete(key).in_keyspace(keyspace);
    req.consistency = level;
    written(execute(&gw.handle, PROTOCOL, req).await)
}

async fn health(State(gw): State<Gateway>) -> Response {
    match gw.handle.status().await {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "down", "error": "not_running", "message": e.to_string() })),
        )
            .into_response(),
    }
}

/// Ready to take client traffic: coordinating requests and `Normal`. A
/// `Syncing` node takes writes but is left out of reads, and a `Joining`
/// or `Leaving` one is moving ranges, so none of them should be sent a
/// load balancer's share of requests (nor count as up for a rolling
/// upgrade to move on to the next node).
async fn ready(State(gw): State<Gateway>) -> Response {
    match gw.handle.status().await {
        Ok(st) if st.ready && st.state == "Normal" => {
            Json(json!({ "status": "ready", "state": st.state })).into_response()
        }
        Ok(st) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "state": st.state, "ready": st.ready })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "not_ready", "error": "not_running", "message": e.to_string() }),
            ),
        )
            .into_response(),
    }
}

async fn status(State(gw): State<Gateway>) -> Response {
    match gw.handle.status().await {
        Ok(st) => Json(st).into_response(),
        Err(e) => request_error(&e),
    }
}

/// The query parameters `/admin/repair` understands.
#[derive(Debug, Deserialize)]
struct RepairParams {
    keyspace: Option<String>,
    node: Option<String>,
}

async fn admin_repair(
    State(gw): State<Gateway>,
    params: Result<Query<RepairParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if params.keyspace.as_deref() == Some("") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "keyspace must not be empty (leave it out to repair every keyspace)",
        );
    }
    let node = match params.node.as_deref() {
        None => None,
        Some(text) => match text.parse::<core::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("node must be a peer's listen address, IP:PORT (as `cassio status` lists it); got {text:?}"),
                )
            }
        },
    };
    let req = RepairRequest {
        keyspace: params.keyspace,
        node,
    };
    match gw.handle.repair(req).await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(e) => request_error(&e),
    }
}

/// The answer to a refused ring operation. A request naming no member is
/// the caller's mistake (400); the others conflict with the cluster's
/// state (409) and may succeed later (the node is down, a node was added).
fn ring_op_error(e: &RingOpError) -> Response {
    use cassio_core::transition::{LeaveError, RemoveError};
    let (status, code) = match e {
        RingOpError::Leave(LeaveError::TooFewNodes { .. }) => {
            (StatusCode::CONFLICT, "too_few_nodes")
        }
        RingOpError::Leave(LeaveError::NotAnOwner(_)) => (StatusCode::CONFLICT, "not_an_owner"),
        RingOpError::Remove(RemoveError::Unknown(_)) => (StatusCode::BAD_REQUEST, "unknown_node"),
        RingOpError::Remove(RemoveError::Alive(_)) => (StatusCode::CONFLICT, "alive"),
        RingOpError::Remove(RemoveError::Itself) => (StatusCode::CONFLICT, "itself"),
        RingOpError::Remove(RemoveError::TooFewNodes { .. }) => {
            (StatusCode::CONFLICT, "too_few_nodes")
        }
        RingOpError::NotRunning => (StatusCode::SERVICE_UNAVAILABLE, "not_running"),
    };
    error(status, code, e)
}

async fn admin_decommission(State(gw): State<Gateway>) -> Response {
    match gw.handle.decommission().await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(e) => ring_op_error(&e),
    }
}

/// The query parameters `/admin/remove` understands.
#[derive(Debug, Deserialize)]
struct RemoveParams {
    node: Option<String>,
}

async fn admin_remove(
    State(gw): State<Gateway>,
    params: Result<Query<RemoveParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let Some(text) = params.node else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name the dead node: ?node=ID (the Node ID column of `cassio status`)",
        );
    };
    let id = match crate::config::parse_node_id(&text) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.reason),
    };
    match gw.handle.remove_dead(id).await {
        Ok(started) => (StatusCode::ACCEPTED, Json(started)).into_response(),
        Err(e) => ring_op_error(&e),
    }
}

async fn render_metrics(State(gw): State<Gateway>) -> Response {
    match &gw.metrics {
        Some(m) => {
            // The node's own figures, as fresh as its status.
            if let Ok(Ok(st)) = tokio::time::timeout(STATUS_WAIT, gw.handle.status()).await {
                super::node_metrics::record(&st, &gw.reported);
            }
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                m.render(),
            )
                .into_response()
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "the Prometheus recorder is not installed in this process",
        ),
    }
}

/// The web console's page (HTML, CSS and JavaScript in one file, written
/// by hand), compiled into the binary so it works with no network.
const CONSOLE_HTML: &str = include_str!("console/console.html");

/// What the console's page may load: nothing but its own inline style and
/// script and `/status` from this node. A browser thus enforces that the
/// page stays self-contained (works offline, leaks nothing to a CDN).
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

async fn console() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            // The page is small and changes with the binary: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CONSOLE_HTML,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {} (try /, /kv/{{key}}, /health, /ready, /status, /metrics, POST /admin/repair, POST /admin/decommission, POST /admin/remove?node=ID)",
            uri.path()
        ),
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_one_well_formed_response() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.parse::<usize>().ok());
        assert_eq!(len, Some(body.len()));
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"], "too_many_connections");
        assert!(head.starts_with("HTTP/1.1 503"));
    }
}
