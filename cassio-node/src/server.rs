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
//! deadlock). A frame is at most [`proto::MAX_FRAME`] bytes. A connection
//! that sends nothing for `idle_timeout` is closed
//! (`cassio_gateway_idle_closes_total{protocol="client"}`); the client
//! library reconnects on its next call.
//!
//! Authentication (a node with users, [`crate::auth`]): the handshake is a
//! [`RequestOp::Auth`] request, answered [`Reply::Authenticated`] or
//! [`RequestError::Unauthorized`] (the same text for an unknown user and a
//! wrong password). Before it, only `Ping` and `Auth` are served; reads
//! (`Get`, `HGet`, `HGetAll`, `Scan`) need read access to the keyspace
//! (`default`, or the one a [`RequestOp::InKeyspace`] names), writes
//! (`Set`, `SetExpiring`, `Del`, `HSet`, `HDel`, `Cas`, `Incr`) write
//! access; the keyspace operations (`ListKeyspaces`, `CreateKeyspace`,
//! `CreateCraqKeyspace`, `AlterKeyspace`, `DropKeyspace`) need the admin
//! right, as `/admin/keyspaces` does.
//! Refusals are `Unauthorized` naming the user and keyspace (or the
//! missing admin right).
//!
//! Keyspaces: [`RequestOp::InKeyspace`] runs one data operation in a named
//! keyspace (an unknown one is `ClientError::UnknownKeyspace`); wrapping
//! anything else, a nested wrapper included, is `BadRequest` and the
//! connection stays open. Keyspace changes answer once the cluster agreed
//! on them, with the schema version, or the node's typed
//! `ClientError::Schema` refusal (exists, unknown, repair pending, ...).
//!
//! TLS (a node with a client certificate): the port speaks only TLS.

use crate::auth::{Authenticator, ClientSecurity, Secret, User};
use crate::gateway::limits::{ConnectionSlots, GatewayLimits};
use crate::handle::{NodeHandle, RequestError};
use crate::proto::{self, Reply, Request, RequestOp, Response};
use cassio_core::schema::SchemaChange;
use cassio_core::{ClientError, ClientRequest, ClientResponse};
use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
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
            RequestOp::Set { key, value, .. } | RequestOp::SetExpiring { key, value, .. } => {
                key.len() + value.len()
            }
            RequestOp::Status | RequestOp::Ping | RequestOp::Layout => 0,
            RequestOp::Scan { prefix, cursor, .. } => {
                prefix.len() + cursor.as_ref().map_or(0, |c| c.len())
            }
            RequestOp::HSet {
                row, column, value, ..
            } => row.len() + column.len() + value.len(),
            RequestOp::HGet { row, column, .. } | RequestOp::HDel { row, column, .. } => {
                row.len() + column.len()
            }
            RequestOp::HGetAll { row, .. } => row.len(),
            RequestOp::Cas { key, expected, new } => {
                key.len() + expected.as_ref().map_or(0, |e| e.len()) + new.len()
            }
            RequestOp::Incr { key, .. } => key.len(),
            RequestOp::Auth { user, password } => user.len() + password.len(),
            // Decoding bounds the nesting (proto::MAX_NESTING).
            RequestOp::InKeyspace { keyspace, op } => keyspace.len() + request_bytes(op),
            RequestOp::ListKeyspaces => 0,
            RequestOp::CreateKeyspace { name, .. }
            | RequestOp::AlterKeyspace { name, .. }
            | RequestOp::DropKeyspace { name }
            | RequestOp::CreateCraqKeyspace { name, .. } => name.len(),
            RequestOp::CreatePlacedKeyspace {
                name, replication, ..
            }
            | RequestOp::AlterKeyspaceReplication { name, replication } => {
                name.len()
                    + replication
                        .datacenters
                        .keys()
                        .map(String::len)
                        .sum::<usize>()
            }
        }
}

/// Permits for `bytes` out of a budget of `max` (one request larger than
/// the whole budget takes all of it, so it still runs, alone).
fn permits(bytes: usize, max: usize) -> u32 {
    u32::try_from(bytes.min(max).max(1)).unwrap_or(u32::MAX)
}

/// Runs one request against the node.
pub async fn execute(handle: &NodeHandle, op: RequestOp) -> Result<Reply, crate::RequestError> {
    match op {
        RequestOp::InKeyspace { keyspace, op } => {
            if !op.is_data() {
                return Err(RequestError::BadRequest(format!(
                    "InKeyspace wraps one data operation (get, set, del, scan, hset, hget, hdel, hgetall, cas, incr), not {}",
                    op_name(&op)
                )));
            }
            execute_in(handle, *op, &keyspace).await
        }
        RequestOp::ListKeyspaces => {
            let st = handle.status().await?;
            Ok(Reply::Keyspaces(proto::KeyspaceList {
                schema_version: st.schema_version,
                keyspaces: st.keyspaces,
            }))
        }
        RequestOp::CreateKeyspace {
            name,
            replication_factor,
            default_consistency,
        } => {
            let change = SchemaChange::Create {
                name,
                replication_factor: factor(replication_factor)?,
                // As `POST /admin/keyspaces`.
                default_consistency: default_consistency
                    .unwrap_or(cassio_core::Consistency::Quorum),
            };
            schema_change(handle, change).await
        }
        RequestOp::AlterKeyspace {
            name,
            replication_factor,
            default_consistency,
        } => {
            if replication_factor.is_none() && default_consistency.is_none() {
                return Err(RequestError::BadRequest(
                    "nothing to change: give a replication factor and/or a consistency".into(),
                ));
            }
            let change = SchemaChange::Alter {
                name,
                replication_factor: replication_factor.map(factor).transpose()?,
                default_consistency,
            };
            schema_change(handle, change).await
        }
        RequestOp::DropKeyspace { name } => {
            schema_change(handle, SchemaChange::Drop { name }).await
        }
        RequestOp::CreatePlacedKeyspace {
            name,
            replication,
            default_consistency,
        } => {
            let change = SchemaChange::CreatePlaced {
                name,
                replication,
                default_consistency: default_consistency
                    .unwrap_or(cassio_core::Consistency::Quorum),
            };
            schema_change(handle, change).await
        }
        RequestOp::AlterKeyspaceReplication { name, replication } => {
            schema_change(handle, SchemaChange::AlterReplication { name, replication }).await
        }
        RequestOp::CreateCraqKeyspace {
            name,
            replication_factor,
        } => {
            let change = SchemaChange::CreateCraq {
                name,
                replication_factor: factor(replication_factor)?,
            };
            schema_change(handle, change).await
        }
        RequestOp::Layout => Ok(Reply::Layout(Box::new(handle.layout().await?))),
        op => execute_in(handle, op, cassio_core::DEFAULT_KEYSPACE).await,
    }
}

/// A replication factor from the wire (a `u64`, whatever the platform).
fn factor(rf: u64) -> Result<usize, RequestError> {
    usize::try_from(rf)
        .map_err(|_| RequestError::BadRequest(format!("replication factor {rf} is too large")))
}

/// Asks the cluster for `change`; errors are the node's typed ones
/// (`ClientError::Schema`: exists, unknown, repair pending, no quorum...).
async fn schema_change(handle: &NodeHandle, change: SchemaChange) -> Result<Reply, RequestError> {
    let version = handle.change_schema(change).await?;
    Ok(Reply::SchemaChanged { version })
}

/// The operation's name in error messages.
fn op_name(op: &RequestOp) -> &'static str {
    match op {
        RequestOp::Get { .. } => "get",
        RequestOp::Set { .. } => "set",
        RequestOp::SetExpiring { .. } => "set with a TTL",
        RequestOp::Del { .. } => "del",
        RequestOp::Scan { .. } => "scan",
        RequestOp::HSet { .. } => "hset",
        RequestOp::HGet { .. } => "hget",
        RequestOp::HDel { .. } => "hdel",
        RequestOp::HGetAll { .. } => "hgetall",
        RequestOp::Status => "status",
        RequestOp::Ping => "ping",
        RequestOp::Auth { .. } => "auth",
        RequestOp::InKeyspace { .. } => "a nested InKeyspace",
        RequestOp::ListKeyspaces => "list keyspaces",
        RequestOp::CreateKeyspace { .. } => "create keyspace",
        RequestOp::AlterKeyspace { .. } => "alter keyspace",
        RequestOp::DropKeyspace { .. } => "drop keyspace",
        RequestOp::CreatePlacedKeyspace { .. } => "create keyspace",
        RequestOp::AlterKeyspaceReplication { .. } => "alter keyspace",
        RequestOp::Layout => "layout",
        RequestOp::CreateCraqKeyspace { .. } => "create keyspace",
        RequestOp::Cas { .. } => "cas",
        RequestOp::Incr { .. } => "incr",
    }
}

/// Runs one operation (not a keyspace wrapper or change) in `keyspace`.
async fn execute_in(
    handle: &NodeHandle,
    op: RequestOp,
    keyspace: &str,
) -> Result<Reply, RequestError> {
    let req = match op {
        RequestOp::Get { key, consistency } => with_level(ClientRequest::get(key), consistency),
        RequestOp::Set {
            key,
            value,
            consistency,
        } => with_level(ClientRequest::put(key, value), consistency),
        RequestOp::Del { key, consistency } => with_level(ClientRequest::delete(key), consistency),
        RequestOp::SetExpiring {
            key,
            value,
            ttl_micros,
            consistency,
        } => with_level(
            ClientRequest::put_expiring(key, value, cassio_core::Expiry::After(ttl_micros)),
            consistency,
        ),
        RequestOp::HSet {
            row,
            column,
            value,
            consistency,
        } => with_level(ClientRequest::hset(row, column, value), consistency),
        RequestOp::HGet {
            row,
            column,
            consistency,
        } => with_level(ClientRequest::hget(row, column), consistency),
        RequestOp::HDel {
            row,
            column,
            consistency,
        } => with_level(ClientRequest::hdel(row, column), consistency),
        RequestOp::Cas { key, expected, new } => ClientRequest {
            keyspace: keyspace.to_string(),
            op: cassio_core::ClientOp::Cas { key, expected, new },
            consistency: None,
        },
        RequestOp::Incr { key, by } => ClientRequest {
            keyspace: keyspace.to_string(),
            op: cassio_core::ClientOp::Incr { key, by },
            consistency: None,
        },
        RequestOp::HGetAll { row, consistency } => {
            return crate::gateway::rows::read_row_more(
                handle,
                None,
                &row,
                cassio_core::RowSlice::All,
                crate::proto::MAX_HGETALL,
                consistency,
                keyspace,
            )
            .await
            .map(|(cells, _)| Reply::Cells(cells))
        }
        RequestOp::Status => return handle.status().await.map(|s| Reply::Status(Box::new(s))),
        RequestOp::Ping => return Ok(Reply::Pong),
        RequestOp::Scan {
            prefix,
            cursor,
            limit,
            consistency,
        } => {
            let from = match cursor {
                Some(c) => cassio_core::ScanCursor::decode(&c)
                    .map_err(|e| RequestError::BadRequest(e.to_string()))?,
                None => cassio_core::ScanCursor::start(),
            };
            let mut req = ClientRequest::scan(prefix, usize::try_from(limit).unwrap_or(usize::MAX));
            if let cassio_core::ClientOp::Scan { from: f, .. } = &mut req.op {
                *f = from;
            }
            with_level(req, consistency)
        }
        // Logins are answered by the connection (they change its user).
        RequestOp::Auth { .. } => {
            return Err(RequestError::Unauthorized(
                "this node has no users configured, so there is no password to check; connect without credentials".into(),
            ))
        }
        // `execute` takes these before they get here.
        op @ (RequestOp::InKeyspace { .. }
        | RequestOp::ListKeyspaces
        | RequestOp::CreateKeyspace { .. }
        | RequestOp::AlterKeyspace { .. }
        | RequestOp::DropKeyspace { .. }
        | RequestOp::CreatePlacedKeyspace { .. }
        | RequestOp::AlterKeyspaceReplication { .. }
        | RequestOp::CreateCraqKeyspace { .. }
        | RequestOp::Layout) => {
            return Err(RequestError::BadRequest(format!(
                "{} cannot be run inside a keyspace",
                op_name(&op)
            )))
        }
    };
    Ok(match handle.execute(req.in_keyspace(keyspace)).await? {
        ClientResponse::Value(v) => Reply::Value(v),
        ClientResponse::Written { ts } => Reply::Written(ts),
        ClientResponse::Entry { value, .. } => Reply::Value(value),
        ClientResponse::Page { entries, next } => Reply::Page {
            entries,
            next: next.map(|c| bytes::Bytes::from(c.encode())),
        },
        ClientResponse::Swapped(s) => Reply::Swapped(s),
        ClientResponse::Counter(n) => Reply::Counter(n),
        ClientResponse::SchemaChanged { .. } | ClientResponse::Cells { .. } => {
            return Err(RequestError::BadRequest(
                "the node answered a request with a schema change or cells".into(),
            ))
        }
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
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
) {
    serve_client_secured(
        listener,
        handle,
        shutdown,
        limits,
        ClientSecurity::default(),
    )
    .await
}

/// [`serve_client_with`] with the users and TLS of `security`.
pub async fn serve_client_secured(
    listener: TcpListener,
    handle: NodeHandle,
    mut shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
    security: ClientSecurity,
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
                        let security = security.clone();
                        let idle = limits.idle_timeout;
                        conns.spawn(async move {
                            let _ = stream.set_nodelay(true);
                            let auth = security.auth;
                            match security.tls {
                                None => serve_conn(stream, from, handle, budgets, auth, idle).await,
                                Some(tls) => {
                                    let hs = tokio::time::timeout(
                                        crate::auth::TLS_HANDSHAKE_TIMEOUT,
                                        tls.accept(stream),
                                    );
                                    match hs.await {
                                        Ok(Ok(s)) => serve_conn(s, from, handle, budgets, auth, idle).await,
                                        Ok(Err(e)) => tracing::debug!(client = %from, error = %e, "client TLS handshake failed"),
                                        Err(_) => tracing::debug!(client = %from, "client TLS handshake timed out"),
                                    }
                                }
                            }
                            drop(slot);
                        });
                    }
                    None => {
                        if let Some(permit) = slots.refusal() {
                            let tls = security.tls.clone();
                            tokio::spawn(async move {
                                match tls {
                                    None => refuse(stream).await,
                                    Some(tls) => {
                                        let hs = tokio::time::timeout(
                                            crate::auth::TLS_HANDSHAKE_TIMEOUT,
                                            tls.accept(stream),
                                        );
                                        if let Ok(Ok(s)) = hs.await {
                                            refuse(s).await;
                                        }
                                    }
                                }
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
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
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

/// Whether a request may run for `user` (`None`: not logged in) on a node
/// whose users are `auth`.
fn permitted(
    auth: Option<&Authenticator>,
    user: Option<&User>,
    op: &RequestOp,
) -> Result<(), RequestError> {
    if auth.is_none() || matches!(op, RequestOp::Ping) {
        return Ok(());
    }
    let Some(user) = user else {
        return Err(RequestError::Unauthorized(
            "authentication required: this node has users; log in first (ClientConfig::credentials, or `cassio --user`)".into(),
        ));
    };
    // A wrapped operation is judged in its keyspace.
    let (keyspace, op) = match op {
        RequestOp::InKeyspace { keyspace, op } => (keyspace.as_str(), op.as_ref()),
        op => (cassio_core::DEFAULT_KEYSPACE, op),
    };
    let write = match op {
        RequestOp::Get { .. }
        | RequestOp::HGet { .. }
        | RequestOp::HGetAll { .. }
        | RequestOp::Scan { .. } => false,
        RequestOp::Set { .. }
        | RequestOp::Del { .. }
        | RequestOp::SetExpiring { .. }
        | RequestOp::HSet { .. }
        | RequestOp::HDel { .. }
        | RequestOp::Cas { .. }
        | RequestOp::Incr { .. } => true,
        // As the HTTP admin routes: the admin right.
        RequestOp::ListKeyspaces
        | RequestOp::CreateKeyspace { .. }
        | RequestOp::AlterKeyspace { .. }
        | RequestOp::DropKeyspace { .. }
        | RequestOp::CreatePlacedKeyspace { .. }
        | RequestOp::AlterKeyspaceReplication { .. }
        | RequestOp::CreateCraqKeyspace { .. } => {
            return Authenticator::check_admin(user)
                .map_err(|e| RequestError::Unauthorized(e.to_string()))
        }
        // Status and the layout need a login only; a nested wrapper is
        // refused by `execute`.
        RequestOp::Status
        | RequestOp::Layout
        | RequestOp::Ping
        | RequestOp::Auth { .. }
        | RequestOp::InKeyspace { .. } => return Ok(()),
    };
    Authenticator::check(user, keyspace, write)
        .map_err(|e| RequestError::Unauthorized(e.to_string()))
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    from: SocketAddr,
    handle: NodeHandle,
    budgets: Budgets,
    auth: Option<Arc<Authenticator>>,
    idle: Option<Duration>,
) {
    let mut user: Option<Arc<User>> = None;
    let (rd, wr) = tokio::io::split(stream);
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
        let read = proto::read_msg(&mut rd);
        let next = match idle {
            Some(d) => match tokio::time::timeout(d, read).await {
                Ok(r) => r,
                Err(_) => {
                    metrics::counter!("cassio_gateway_idle_closes_total", "protocol" => "client")
                        .increment(1);
                    tracing::debug!(client = %from, "idle client connection closed (idle_timeout)");
                    break;
                }
            },
            None => read.await,
        };
        let req: Request = match next {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                metrics::counter!("cassio_client_protocol_errors_total").increment(1);
                tracing::info!(client = %from, error = %e, "bad client frame: closing the connection");
                break;
            }
        };
        if let (
            Some(a),
            RequestOp::Auth {
                user: name,
                password,
            },
        ) = (&auth, &req.op)
        {
            let result = match a
                .login(
                    name,
                    password,
                    Secret::Password,
                    "client",
                    &from.to_string(),
                )
                .await
            {
                Ok(u) => {
                    user = Some(u);
                    Ok(Reply::Authenticated)
                }
                Err(e) => Err(RequestError::Unauthorized(e.to_string())),
            };
            if tx.send(Response { id: req.id, result }).await.is_err() {
                break;
            }
            continue;
        }
        if let Err(e) = permitted(auth.as_deref(), user.as_deref(), &req.op) {
            if tx
                .send(Response {
                    id: req.id,
                    result: Err(e),
                })
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
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
