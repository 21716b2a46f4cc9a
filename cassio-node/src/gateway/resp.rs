//! The RESP gateway: Cassio behind the Redis protocol, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries work unchanged.
//!
//! Supported: `GET SET DEL EXISTS MGET MSET TYPE PING ECHO QUIT RESET HELLO
//! AUTH INFO COMMAND CLIENT SELECT 0 CONFIG GET` (the connection commands
//! are in `resp_conn.rs`), `INCR DECR INCRBY DECRBY` and `SET k v IFEQ old`
//! (atomic, on chain-replicated `craq` keyspaces only; see below), and
//! Cassio's own `CASSIO.CONSISTENCY [level]` and `CASSIO.KEYSPACE [name]`
//! (the keyspace the connection's commands address from then on; `default`
//! at first; an unknown one is refused per command).
//!
//! Protocols: a connection starts in RESP2; `HELLO 3` switches it to RESP3
//! and `HELLO 2` back. Under RESP3 replies take the types Redis 7 gives
//! them: `_` for a missing value (GET, MGET holes, CLIENT GETNAME), maps for
//! HELLO, CONFIG GET and COMMAND DOCS, sets for COMMAND's flags, a verbatim
//! string for INFO. Under RESP2 they are what they always were. `HELLO`'s
//! `SETNAME` names the connection.
//!
//! Authentication (when the node has users, see [`crate::auth`]): a new
//! connection may only send `AUTH`, `HELLO` and `QUIT`; anything else is
//! answered `-NOAUTH Authentication required.` (as Redis does). `AUTH pass`
//! (user `default`), `AUTH user pass` and `HELLO 3 AUTH user pass` log in;
//! a wrong user or password gets `-WRONGPASS invalid username-password pair
//! or user is disabled.` whichever of the two was wrong. Reads need
//! `read-only` or `read-write` access to the keyspace (`default` here),
//! writes `read-write`; refusals are `-NOPERM ...` naming the user, the
//! keyspace and its access. Without users, `AUTH` is refused with an error
//! saying there is nothing to check it against.
//!
//! TLS (when the node has a client certificate): the port speaks only TLS
//! (`redis-cli --tls --cacert ca.pem`); the handshake must finish within
//! [`crate::auth::TLS_HANDSHAKE_TIMEOUT`].
//! Expiry and conditional writes (`SET ... EX|PX|EXAT|PXAT|KEEPTTL|NX|XX|GET`,
//! `SETEX PSETEX SETNX GETEX GETDEL EXPIRE PEXPIRE EXPIREAT PEXPIREAT TTL
//! PTTL PERSIST`) live in `resp_expiry.rs`, with their semantics.
//! Anything else is answered with an error that names what is unsupported
//! (`ERR unknown or unsupported command 'LPUSH' ...`), never by dropping
//! the connection. Malformed protocol is answered with `-ERR Protocol
//! error: ...` and the connection is closed, as Redis does.
//!
//! Consistency: requests use the keyspace's default level. The extension
//! command `CASSIO.CONSISTENCY <one|two|three|quorum|all|default>` sets the
//! level for the rest of the connection; without an argument it returns the
//! current one.
//!
//! Semantics worth knowing:
//! - `DEL` and `EXISTS` count keys by reading them first (at the
//!   connection's level); `DEL`'s count and its tombstone are not atomic.
//! - `MSET` writes its keys concurrently and is not atomic: on an error some
//!   keys may have been written.
//! - Errors from the cluster carry their own code: `-UNAVAILABLE ...`,
//!   `-TIMEOUT ...`, `-TRYAGAIN ...` (still joining, or a craq key's
//!   chain is changing: nothing was done, retry), `-BUSY ...`
//!   (overloaded: back off and retry), otherwise `-ERR ...`.
//! - Chain-replicated (`craq`) keyspaces are linearizable and add atomic
//!   operations: `INCR`, `DECR`, `INCRBY n`, `DECRBY n` (the value read as
//!   a decimal `i64`, absent as 0; integer reply), `SET k v IFEQ old`
//!   (Valkey 8.1: set only if the current value is `old`; `+OK` or nil)
//!   and `SET k v NX`/`SETNX` (set only if absent, one compare-and-set).
//!   On a last-write-wins keyspace `INCR*` and `IFEQ` are refused with
//!   `-ERR invalid operation: ...`, as is an increment of a value that is
//!   no integer; `NX` keeps its read-then-write meaning there. A craq
//!   keyspace offers no scans, hashes or expiries.
//!
//! Caps ([`GatewayLimits`]): past `max_connections` a new connection is
//! answered `-ERR max number of clients reached` and closed (as Redis does);
//! a connection holding more than `max_query_buffer_bytes` of unanswered
//! input, or one whose input takes the port's total over
//! `max_total_query_buffer_bytes`, is answered an error naming the setting
//! and closed; a multi-key command naming more than `max_keys_per_command`
//! keys is refused with an error naming the cap. A node that is overloaded
//! answers `-BUSY ...`: back off and retry. A connection that sends nothing
//! for `idle_timeout` is told `-ERR idle timeout ...` and closed (metric
//! `cassio_gateway_idle_closes_total{protocol}`).
//!
//! Pipelining: every complete command in the read buffer is parsed, their
//! node requests run concurrently, and the answers go out in order in one
//! write. Requests stay in order where it matters: a read of a key that an
//! earlier command of the batch writes (or the reverse) waits for it; writes
//! to the same key are submitted in order and so get increasing timestamps.

#[path = "resp_expiry.rs"]
mod expiry;
#[path = "resp_hash.rs"]
mod hash;

use super::limits::{self, BufferBudget, BufferShare, ConnectionSlots, GatewayLimits};
#[path = "resp_scan.rs"]
mod resp_scan;
use super::resp3;
use super::resp_proto::{self as proto, Limits, Parser};
use super::{check_key, check_value, execute, shutdown_signal, Protocol, DRAIN_TIMEOUT};
use crate::auth::{AuthError, Authenticator, ClientSecurity, Secret, User};
use crate::handle::{NodeHandle, RequestError};
use bytes::{Bytes, BytesMut};
use cassio_core::{ClientError, ClientRequest, ClientResponse, Consistency};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

// Connection and server commands (CLIENT, CONFIG, COMMAND DOCS, SELECT,
// RESET, static INFO sections), kept out of this file.
#[path = "resp_conn.rs"]
mod conn_cmds;
// The connection task under arbitrary input (a proptest).
#[cfg(test)]
#[path = "resp_conn_props.rs"]
mod conn_props;

/// The `protocol` label of this gateway's metrics.
const PROTOCOL: Protocol = Protocol::Resp;

/// The Redis version reported to clients that check one (HELLO, INFO):
/// the command subset above behaves as in this version.
const COMPAT_REDIS_VERSION: &str = "7.0.0";

/// Most commands answered per write; bounds a connection's reply buffer
/// when a client pipelines without pause.
const MAX_BATCH: usize = 1024;

/// Read buffer capacity reserved before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Connection ids, for `CLIENT ID` and `HELLO`.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// What a connection past `max_connections` is told before it is closed
/// (Redis' words, which clients and operators recognise).
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Serves RESP on `listener` until `shutdown` turns `true`, within `limits`,
/// with the users and TLS of `security`.
pub async fn serve(
    listener: TcpListener,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    limits: GatewayLimits,
    security: ClientSecurity,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        max_connections = limits.max_connections,
        tls = security.tls.is_some(),
        auth = security.auth.is_some(),
        "RESP gateway listening"
    );
    let port = local.port();
    let slots = ConnectionSlots::new(limits.max_connections);
    let budget = BufferBudget::new(limits.max_total_query_buffer_bytes);
    let mut conns = JoinSet::new();
    let stop = shutdown_signal(shutdown.clone());
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    backoff = Duration::from_millis(5);
                    let Some(slot) = slots.admit("resp") else {
                        match &security.tls {
                            None => slots.refuse(sock, MAX_CLIENTS_REPLY),
                            // The refusal must be readable by a TLS client.
                            Some(tls) => if let Some(permit) = slots.refusal() {
                                let tls = tls.clone();
                                tokio::spawn(async move {
                                    let hs = tokio::time::timeout(
                                        crate::auth::TLS_HANDSHAKE_TIMEOUT,
                                        tls.accept(sock),
                                    );
                                    if let Ok(Ok(s)) = hs.await {
                                        limits::write_and_linger(s, MAX_CLIENTS_REPLY).await;
                                    }
                                    drop(permit);
                                });
                            },
                        }
                        continue;
                    };
                    let handle = handle.clone();
                    let shutdown = shutdown.clone();
                    let share = budget.share();
                    let security = security.clone();
                    conns.spawn(async move {
                        metrics::gauge!("cassio_gateway_connections", "protocol" => "resp")
                            .increment(1.0);
                        // Replies are written whole per batch, so Nagle
                        // would only add latency.
                        let _ = sock.set_nodelay(true);
                        let ctx = ConnCtx { port, limits, auth: security.auth, peer };
                        let res = match security.tls {
                            None => connection(sock, handle, shutdown, ctx, share).await,
                            Some(tls) => {
                                let hs = tokio::time::timeout(
                                    crate::auth::TLS_HANDSHAKE_TIMEOUT,
                                    tls.accept(sock),
                                );
                                match hs.await {
                                    Ok(Ok(s)) => connection(s, handle, shutdown, ctx, share).await,
                                    Ok(Err(e)) => Err(e),
                                    Err(_) => Err(std::io::Error::new(
                                        std::io::ErrorKind::TimedOut,
                                        "TLS handshake timed out",
                                    )),
                                }
                            }
                        };
                        if let Err(e) = res {
                            tracing::debug!(%peer, error = %e, "RESP connection ended with an error");
                        }
                        metrics::gauge!("cassio_gateway_connections", "protocol" => "resp")
                            .decrement(1.0);
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors and similar: transient, so wait and
                    // retry rather than end the gateway.
                    tracing::warn!(error = %e, "RESP gateway accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    drop(listener);
    tracing::info!(addr = %local, open = conns.len(), "RESP gateway stopping");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "RESP connections still busy after the drain timeout; dropping them"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// The reply protocol of a connection, chosen by `HELLO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Resp2,
    Resp3,
}

impl Proto {
    fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// Per-connection state that commands read and change.
#[derive(Debug)]
struct Conn {
    id: u64,
    name: Option<Bytes>,
    /// How replies are encoded from the current command on.
    proto: Proto,
    consistency: Option<Consistency>,
    /// The keyspace this connection's commands address
    /// (`CASSIO.KEYSPACE`; `default` at first).
    keyspace: Arc<str>,
    quit: bool,
    port: u16,
    /// Most keys one multi-key command may name.
    max_keys: usize,
    /// The node's users; `None`: no authentication.
    auth: Option<Arc<Authenticator>>,
    /// Who the connection logged in as.
    user: Option<Arc<User>>,
    /// The client's address, for the failure log.
    peer: std::net::SocketAddr,
    /// What the client library announced (`CLIENT SETINFO`), for
    /// `CLIENT INFO`.
    lib_name: Option<Arc<str>>,
    lib_ver: Option<Arc<str>>,
}

/// What a connection is given besides its socket.
struct ConnCtx {
    port: u16,
    limits: GatewayLimits,
    auth: Option<Arc<Authenticator>>,
    peer: std::net::SocketAddr,
}

/// Why a connection is closed for the input it holds, as the client is told.
fn buffer_limit_error(
    share: &mut BufferShare,
    held: usize,
    limits: &GatewayLimits,
) -> Option<String> {
    let (limit, msg) = if held > limits.max_query_buffer_bytes {
        (
            "connection",
            format!(
                "ERR client query buffer of {held} bytes exceeds the limit of {} bytes (max_query_buffer_bytes); closing the connection",
                limits.max_query_buffer_bytes
            ),
        )
    } else if !share.set(held) {
        (
            "total",
            format!(
                "ERR client query buffers of all connections exceed the limit of {} bytes (max_total_query_buffer_bytes); closing the connection",
                limits.max_total_query_buffer_bytes
            ),
        )
    } else {
        return None;
    };
    metrics::counter!("cassio_gateway_buffer_limit_closes_total", "protocol" => "resp", "limit" => limit)
        .increment(1);
    tracing::info!(held, limit, "RESP connection closed: query buffer limit");
    Some(msg)
}

/// One connection: read, answer every complete command, write, repeat.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    handle: NodeHandle,
    shutdown: watch::Receiver<bool>,
    ctx: ConnCtx,
    mut share: BufferShare,
) -> std::io::Result<()> {
    let limits = ctx.limits;
    let mut conn = Conn {
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        name: None,
        proto: Proto::Resp2,
        consistency: None,
        keyspace: Arc::from(cassio_core::DEFAULT_KEYSPACE),
        quit: false,
        port: ctx.port,
        max_keys: limits.max_keys_per_command,
        auth: ctx.auth,
        user: None,
        peer: ctx.peer,
        lib_name: None,
        lib_ver: None,
    };
    // One command can never be larger than the connection's whole buffer.
    let mut parser = Parser::new(Limits {
        max_command: Limits::default()
            .max_command
            .min(limits.max_query_buffer_bytes),
        ..Limits::default()
    });
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut cmds: Vec<Vec<Bytes>> = Vec::new();
    let stop = shutdown_signal(shutdown);
    tokio::pin!(stop);
    loop {
        let mut fatal = None;
        let mut batch_full = false;
        loop {
            if cmds.len() >= MAX_BATCH {
                batch_full = true;
                break;
            }
            match parser.next(&mut rbuf) {
                Ok(Some(c)) => cmds.push(c),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if !cmds.is_empty() {
            run_batch(&handle, &mut conn, std::mem::take(&mut cmds), &mut out).await;
        }
        // The batch's commands are answered: only the unparsed rest is held.
        // (While it ran, the share still counted them.)
        share.set(rbuf.len());
        // After QUIT's reply nothing more is said, not even about garbage
        // that followed it (found by `resp_conn_props.rs`).
        if let Some(e) = fatal.as_ref().filter(|_| !conn.quit) {
            proto::error(&mut out, &format!("ERR {e}"));
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
        if conn.quit {
            return Ok(());
        }
        if fatal.is_some() {
            limits::linger(&mut sock).await;
            return Ok(());
        }
        if batch_full {
            continue;
        }
        rbuf.reserve(READ_CHUNK);
        let idle = async {
            match limits.idle_timeout {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut stop => return Ok(()),
            n = sock.read_buf(&mut rbuf) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            () = idle => {
                metrics::counter!("cassio_gateway_idle_closes_total", "protocol" => "resp").increment(1);
                let secs = limits.idle_timeout.map_or(0, |d| d.as_secs());
                proto::error(&mut out, &format!(
                    "ERR idle timeout: no command for {secs} s (idle_timeout); closing the connection"
                ));
                sock.write_all(&out).await?;
                limits::linger(&mut sock).await;
                return Ok(());
            }
        }
        if let Some(msg) = buffer_limit_error(&mut share, rbuf.len(), &limits) {
            proto::error(&mut out, &msg);
            sock.write_all(&out).await?;
            limits::linger(&mut sock).await;
            return Ok(());
        }
    }
}

/// A reply waiting to be encoded, in the protocol of the connection at the
/// command it answers.
#[derive(Debug)]
enum Reply {
    Simple(&'static str),
    Error(String),
    Int(i64),
    /// A bulk string, or the null: `$-1` in RESP2, `_` in RESP3.
    Bulk(Option<Bytes>),
    Array(Vec<Reply>),
    /// A map: `%` in RESP3, a flat key, value, key, value array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set: `~` in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// Plain text: a `txt` verbatim string in RESP3, a bulk string in RESP2.
    Text(Bytes),
}

impl Reply {
    fn encode(&self, out: &mut BytesMut, p: Proto) {
        match (self, p) {
            (Reply::Simple(s), _) => proto::simple(out, s),
            (Reply::Error(e), _) => proto::error(out, e),
            (Reply::Int(n), _) => proto::int(out, *n),
            (Reply::Bulk(None), Proto::Resp3) => resp3::null(out),
            (Reply::Bulk(b), _) => proto::bulk(out, b.as_deref()),
            (Reply::Array(items), _) => {
                proto::array(out, items.len());
                Self::encode_all(items, out, p);
            }
            (Reply::Set(items), Proto::Resp2) => {
                proto::array(out, items.len());
                Self::encode_all(items, out, p);
            }
            (Reply::Set(items), Proto::Resp3) => {
                resp3::set(out, items.len());
                Self::encode_all(items, out, p);
            }
            (Reply::Map(pairs), _) => {
                match p {
                    Proto::Resp2 => proto::array(out, pairs.len() * 2),
                    Proto::Resp3 => resp3::map(out, pairs.len()),
                }
                for (k, v) in pairs {
                    k.encode(out, p);
                    v.encode(out, p);
                }
            }
            (Reply::Text(t), Proto::Resp2) => proto::bulk(out, Some(t)),
            (Reply::Text(t), Proto::Resp3) => resp3::verbatim(out, b"txt", t),
        }
    }

    fn encode_all(items: &[Reply], out: &mut BytesMut, p: Proto) {
        for i in items {
            i.encode(out, p);
        }
    }

    fn bulk_str(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }
}

/// Work on the node that one command needs.
#[derive(Debug)]
enum IoKind {
    Get(Bytes),
    Set(Bytes, Bytes),
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    Info(Option<String>, u16),
    /// Expiry and conditional writes (`resp_expiry.rs`).
    Expiry(Box<expiry::ExpiryOp>),
    /// `SCAN`, `KEYS`, `DBSIZE` (see `resp_scan`).
    Scan(resp_scan::ScanKind),
    /// A hash command (a row of cells; see `resp_hash`).
    Hash(hash::HashOp),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`: add this much (craq keyspaces).
    Incr(Bytes, i64),
}

/// A command turned into node work at the connection's level at that point.
#[derive(Debug)]
struct IoOp {
    kind: IoKind,
    consistency: Option<Consistency>,
    keyspace: Arc<str>,
}

impl IoOp {
    fn reads(&self) -> &[Bytes] {
        match &self.kind {
            IoKind::Get(k) => std::slice::from_ref(k),
            IoKind::Exists(ks) | IoKind::MGet(ks) | IoKind::Del(ks) => ks,
            IoKind::Expiry(e) => std::slice::from_ref(e.key()),
            IoKind::Hash(h) => std::slice::from_ref(h.key()),
            _ => &[],
        }
    }

    fn writes(&self) -> impl Iterator<Item = &Bytes> {
        let (one, many, pairs): (Option<&Bytes>, &[Bytes], &[(Bytes, Bytes)]) = match &self.kind {
            IoKind::Set(k, _) | IoKind::Incr(k, _) => (Some(k), &[], &[]),
            IoKind::Del(ks) => (None, ks, &[]),
            IoKind::MSet(kvs) => (None, &[], kvs),
            IoKind::Expiry(e) if e.writes() => (Some(e.key()), &[], &[]),
            IoKind::Hash(h) if h.writes() => (Some(h.key()), &[], &[]),
            _ => (None, &[], &[]),
        };
        one.into_iter()
            .chain(many.iter())
            .chain(pairs.iter().map(|(k, _)| k))
    }
}

/// A command after parsing: answered already, or waiting on the node.
#[derive(Debug)]
enum Plan {
    Ready(Reply),
    Io(IoOp),
}

/// Answers `cmds` in order into `out`.
async fn run_batch(
    handle: &NodeHandle,
    conn: &mut Conn,
    cmds: Vec<Vec<Bytes>>,
    out: &mut BytesMut,
) {
    let mut plans = Vec::with_capacity(cmds.len());
    // Each reply is encoded in the protocol in force after its command ran:
    // `HELLO 3` is itself answered in RESP3, the commands before it in RESP2.
    let mut protos = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        if conn.quit {
            // Redis closes after QUIT's reply; later commands get no answer.
            break;
        }
        if let Some(login) = login_request(&cmd, conn) {
            // A login changes what the commands after it may do: the ones
            // before it run first, with the rights they were planned with.
            run_plans(
                handle,
                std::mem::take(&mut plans),
                std::mem::take(&mut protos),
                out,
            )
            .await;
            let reply = run_login(conn, &cmd, login).await;
            reply.encode(out, conn.proto);
            continue;
        }
        plans.push(gate(cmd, conn));
        protos.push(conn.proto);
    }
    run_plans(handle, plans, protos, out).await;
}

/// The user name and password an `AUTH` or `HELLO ... AUTH` carries, when
/// the node has users to check them against (without users, `plan` refuses
/// them).
fn login_request(cmd: &[Bytes], conn: &Conn) -> Option<Result<(Bytes, Bytes), Reply>> {
    conn.auth.as_ref()?;
    let mut upper = [0u8; 24];
    match command_name(cmd.first()?, &mut upper) {
        "AUTH" => Some(match cmd.len() {
            2 => Ok((Bytes::from_static(b"default"), cmd[1].clone())),
            3 => Ok((cmd[1].clone(), cmd[2].clone())),
            _ => Err(Reply::Error(
                "ERR wrong number of arguments for 'auth' command".into(),
            )),
        }),
        "HELLO" => {
            let at = cmd
                .iter()
                .skip(2)
                .position(|a| a.eq_ignore_ascii_case(b"AUTH"))?
                + 2;
            match (cmd.get(at + 1), cmd.get(at + 2)) {
                (Some(u), Some(p)) => Some(Ok((u.clone(), p.clone()))),
                // Malformed: `hello` itself answers the syntax error.
                _ => None,
            }
        }
        _ => None,
    }
}

/// Checks a login and, for `HELLO`, answers the rest of it.
async fn run_login(conn: &mut Conn, cmd: &[Bytes], login: Result<(Bytes, Bytes), Reply>) -> Reply {
    let (user, pass) = match login {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Some(auth) = conn.auth.clone() else {
        return Reply::Error(NO_AUTH.into());
    };
    let name = String::from_utf8_lossy(&user);
    let pass = String::from_utf8_lossy(&pass);
    let peer = conn.peer.to_string();
    match auth
        .login(&name, &pass, Secret::Password, "resp", &peer)
        .await
    {
        Ok(u) => conn.user = Some(u),
        Err(e) => {
            // A failed AUTH leaves the connection as it was (Redis too).
            return Reply::Error(format!("WRONGPASS {e}."));
        }
    }
    let mut upper = [0u8; 24];
    if command_name(&cmd[0], &mut upper) == "AUTH" {
        return Reply::Simple("OK");
    }
    // HELLO: the rest of it, without the AUTH option just checked.
    let mut rest: Vec<Bytes> = Vec::with_capacity(cmd.len());
    let mut i = 0;
    while i < cmd.len() {
        if i >= 2 && cmd[i].eq_ignore_ascii_case(b"AUTH") {
            i += 3;
            continue;
        }
        rest.push(cmd[i].clone());
        i += 1;
    }
    match hello(&rest, conn) {
        Plan::Ready(r) => r,
        Plan::Io(_) => Reply::Error("ERR internal error: HELLO planned node work".into()),
    }
}

/// Plans `cmd`, refusing what the connection's user may not run: anything
/// but `HELLO ... AUTH` and `QUIT` before a login (`AUTH` never gets here
/// when there are users), reads without read access and writes without
/// write access to the keyspace.
fn gate(cmd: Vec<Bytes>, conn: &mut Conn) -> Plan {
    if conn.auth.is_none() {
        return plan(cmd, conn);
    }
    let Some(user) = conn.user.clone() else {
        let mut upper = [0u8; 24];
        let name = cmd.first().map_or("", |c| command_name(c, &mut upper));
        return match name {
            "QUIT" | "RESET" => plan(cmd, conn),
            "HELLO" => err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"),
            _ => err("NOAUTH Authentication required."),
        };
    };
    let planned = plan(cmd, conn);
    let Plan::Io(op) = &planned else {
        return planned;
    };
    let write = match &op.kind {
        IoKind::Set(..) | IoKind::Del(_) | IoKind::MSet(_) | IoKind::Incr(..) => true,
        IoKind::Get(_) | IoKind::Exists(_) | IoKind::MGet(_) | IoKind::Scan(_) => false,
        IoKind::Info(..) => return planned,
        IoKind::Expiry(e) => e.writes(),
        IoKind::Hash(h) => h.writes(),
    };
    match Authenticator::check(&user, &op.keyspace, write) {
        Ok(()) => planned,
        Err(e @ AuthError::Forbidden { .. }) => err(format!("NOPERM {e}")),
        Err(e) => err(format!("ERR {e}")),
    }
}

/// Runs planned commands and encodes their replies in order.
async fn run_plans(handle: &NodeHandle, plans: Vec<Plan>, protos: Vec<Proto>, out: &mut BytesMut) {
    if plans.is_empty() {
        return;
    }
    if let ([Plan::Io(op)], [p]) = (plans.as_slice(), protos.as_slice()) {
        run_io(handle, op).await.encode(out, *p);
        return;
    }
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(plans.len());
    let mut start = 0;
    while start < plans.len() {
        let end = wave_end(&plans, start);
        let ops: Vec<&IoOp> = plans[start..end]
            .iter()
            .filter_map(|p| match p {
                Plan::Io(op) => Some(op),
                Plan::Ready(_) => None,
            })
            .collect();
        let mut results =
            futures_util::future::join_all(ops.into_iter().map(|op| run_io(handle, op)))
                .await
                .into_iter();
        for p in &plans[start..end] {
            replies.push(match p {
                Plan::Io(_) => results.next(),
                Plan::Ready(_) => None,
            });
        }
        start = end;
    }
    for ((plan, reply), p) in plans.iter().zip(replies).zip(protos) {
        match (plan, reply) {
            (_, Some(r)) => r.encode(out, p),
            (Plan::Ready(r), None) => r.encode(out, p),
            (Plan::Io(_), None) => proto::error(out, "ERR internal error: missing reply"),
        }
    }
}

/// The end of the run of commands from `start` that may run concurrently:
/// it stops before a command that reads a key the run writes, or writes a
/// key the run reads.
fn wave_end(plans: &[Plan], start: usize) -> usize {
    let mut reads: HashSet<&[u8]> = HashSet::new();
    let mut writes: HashSet<&[u8]> = HashSet::new();
    for (i, p) in plans.iter().enumerate().skip(start) {
        let Plan::Io(op) = p else { continue };
        // A scan reads every key: it runs alone, in order.
        if matches!(op.kind, IoKind::Scan(_)) {
            return if i > start { i } else { i + 1 };
        }
        let conflict = op.reads().iter().any(|k| writes.contains(&k[..]))
            || op.writes().any(|k| reads.contains(&k[..]));
        if conflict && i > start {
            return i;
        }
        reads.extend(op.reads().iter().map(|k| &k[..]));
        writes.extend(op.writes().map(|k| &k[..]));
    }
    plans.len()
}

/// The upper-case command name in `buf`, without allocating (this runs for
/// every command); names too long or not ASCII for any supported command
/// give `""`, which matches nothing.
fn command_name<'a>(arg: &[u8], buf: &'a mut [u8; 24]) -> &'a str {
    if arg.len() > buf.len() || !arg.is_ascii() {
        return "";
    }
    let out = &mut buf[..arg.len()];
    out.copy_from_slice(arg);
    out.make_ascii_uppercase();
    std::str::from_utf8(out).unwrap_or_default()
}

/// The upper-case form of an argument, for matching and messages.
fn name_of(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn wrong_arity(cmd: &str) -> Plan {
    Plan::Ready(Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        cmd.to_ascii_lowercase()
    )))
}

fn err(msg: impl Into<String>) -> Plan {
    Plan::Ready(Reply::Error(msg.into()))
}

/// Refuses a multi-key command naming more than `max` keys.
fn check_key_count(name: &str, keys: usize, max: usize) -> Result<(), Plan> {
    if keys <= max {
        return Ok(());
    }
    metrics::counter!("cassio_gateway_key_limit_refusals_total", "protocol" => "resp").increment(1);
    Err(err(format!(
        "ERR too many keys: {name} names {keys} keys, the limit is {max} (max_keys_per_command)"
    )))
}

/// Checks every key (and value) against the gateway limits.
fn check_sizes<'a>(
    keys: impl IntoIterator<Item = &'a Bytes>,
    values: impl IntoIterator<Item = &'a Bytes>,
) -> Result<(), Plan> {
    for k in keys {
        check_key(k).map_err(|e| err(format!("ERR {e}")))?;
    }
    for v in values {
        check_value(v).map_err(|e| err(format!("ERR {e}")))?;
    }
    Ok(())
}

/// Turns one command into its reply or its node work, applying connection
/// state changes (level, name, QUIT) in command order.
fn plan(mut args: Vec<Bytes>, conn: &mut Conn) -> Plan {
    let Some(first) = args.first() else {
        // The parser never yields an empty command; answered anyway so the
        // handler stands on its own.
        return err("ERR empty command");
    };
    let mut upper = [0u8; 24];
    let name = command_name(first, &mut upper);
    let argc = args.len();
    let io = |kind| {
        Plan::Io(IoOp {
            kind,
            consistency: conn.consistency,
            keyspace: conn.keyspace.clone(),
        })
    };
    if let Some(planned) = expiry::plan(name, &args) {
        return match planned {
            Ok(op) => {
                if let Err(p) = check_sizes([op.key()], []) {
                    return p;
                }
                io(expiry::io_kind(op))
            }
            Err(p) => p,
        };
    }
    match name {
        "GET" => {
            if argc != 2 {
                return wrong_arity(name);
            }
            let key = args.swap_remove(1);
            if let Err(p) = check_sizes([&key], []) {
                return p;
            }
            io(IoKind::Get(key))
        }
        "SET" => {
            if argc < 3 {
                return wrong_arity(name);
            }
            // `SET` with options is `expiry::plan`'s.
            let value = args.swap_remove(2);
            let key = args.swap_remove(1);
            if let Err(p) = check_sizes([&key], [&value]) {
                return p;
            }
            io(IoKind::Set(key, value))
        }
        "DEL" | "UNLINK" | "EXISTS" | "MGET" => {
            if argc < 2 {
                return wrong_arity(name);
            }
            if let Err(p) = check_key_count(name, argc - 1, conn.max_keys) {
                return p;
            }
            let mut keys = args.split_off(1);
            if let Err(p) = check_sizes(&keys, []) {
                return p;
            }
            match name {
                "EXISTS" => io(IoKind::Exists(keys)),
                "MGET" => io(IoKind::MGet(keys)),
                _ => {
                    // Redis counts a key named twice once.
                    let mut seen = HashSet::new();
                    keys.retain(|k| seen.insert(k.clone()));
                    io(IoKind::Del(keys))
                }
            }
        }
        "MSET" => {
            if argc < 3 || argc & 1 == 0 {
                return wrong_arity(name);
            }
            if let Err(p) = check_key_count(name, argc / 2, conn.max_keys) {
                return p;
            }
            let mut pairs = Vec::with_capacity(argc / 2);
            let mut it = args.into_iter().skip(1);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            if let Err(p) = check_sizes(pairs.iter().map(|(k, _)| k), pairs.iter().map(|(_, v)| v))
            {
                return p;
            }
            io(IoKind::MSet(pairs))
        }
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
            let by_arg = matches!(name, "INCRBY" | "DECRBY");
            if argc != 2 + usize::from(by_arg) {
                return wrong_arity(name);
            }
            let by = if by_arg {
                let Some(n) = std::str::from_utf8(&args[2])
                    .ok()
                    .and_then(|a| a.parse::<i64>().ok())
                else {
                    return err("ERR value is not an integer or out of range");
                };
                n
            } else {
                1
            };
            let by = if name.starts_with('D') {
                match by.checked_neg() {
                    Some(b) => b,
                    None => return err("ERR decrement would overflow"),
                }
            } else {
                by
            };
            let key = args.swap_remove(1);
            if let Err(p) = check_sizes([&key], []) {
                return p;
            }
            io(IoKind::Incr(key, by))
        }
        "SCAN" | "KEYS" | "DBSIZE" => match resp_scan::plan(name, &args) {
            Ok(kind) => io(kind),
            Err(e) => err(e),
        },
        "PING" => match argc {
            1 => Plan::Ready(Reply::Simple("PONG")),
            2 => Plan::Ready(Reply::Bulk(Some(args.swap_remove(1)))),
            _ => wrong_arity(name),
        },
        "ECHO" => {
            if argc != 2 {
                return wrong_arity(name);
            }
            Plan::Ready(Reply::Bulk(Some(args.swap_remove(1))))
        }
        "QUIT" => {
            conn.quit = true;
            Plan::Ready(Reply::Simple("OK"))
        }
        "SELECT" => conn_cmds::select(&args),
        "RESET" => conn_cmds::reset(&args, conn),
        "HELLO" => hello(&args, conn),
        "AUTH" => err(NO_AUTH),
        "INFO" => {
            if argc > 2 {
                return err("ERR INFO with more than one section is not supported by Cassio");
            }
            let section = args
                .get(1)
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
            io(IoKind::Info(section, conn.port))
        }
        "COMMAND" => command(&args),
        "CLIENT" => conn_cmds::client(&args, conn),
        "CONFIG" => conn_cmds::config(&args),
        "HSET" | "HMSET" | "HSETNX" | "HGET" | "HMGET" | "HDEL" | "HGETALL" | "HKEYS" | "HVALS"
        | "HLEN" | "HEXISTS" | "HSCAN" | "TYPE" => {
            hash::plan(name, args, conn.consistency, conn.keyspace.clone())
                .unwrap_or_else(|| err("ERR unknown command"))
        }
        "CASSIO.KEYSPACE" => match argc {
            1 => Plan::Ready(Reply::bulk_str(&conn.keyspace)),
            2 => {
                let ks = String::from_utf8_lossy(args.get(1).map_or(&[][..], |a| &a[..]));
                // Existence is the node's to judge, per request (keyspaces
                // come and go); the name's form is checked here.
                if ks != cassio_core::DEFAULT_KEYSPACE {
                    if let Err(e) = cassio_core::schema::check_name(&ks) {
                        return err(format!("ERR {e}"));
                    }
                }
                conn.keyspace = Arc::from(ks.as_ref());
                Plan::Ready(Reply::Simple("OK"))
            }
            _ => wrong_arity(name),
        },
        "CASSIO.CONSISTENCY" => match argc {
            1 => Plan::Ready(Reply::bulk_str(
                &conn
                    .consistency
                    .map_or_else(|| "DEFAULT".to_string(), |c| c.to_string()),
            )),
            2 => {
                let level = String::from_utf8_lossy(args.get(1).map_or(&[][..], |a| &a[..]));
                if level.eq_ignore_ascii_case("default") {
                    conn.consistency = None;
                    return Plan::Ready(Reply::Simple("OK"));
                }
                match level.parse::<Consistency>() {
                    Ok(c) => {
                        conn.consistency = Some(c);
                        Plan::Ready(Reply::Simple("OK"))
                    }
                    Err(e) => err(format!("ERR {e}")),
                }
            }
            _ => wrong_arity(name),
        },
        _ => err(format!(
            "ERR unknown or unsupported command '{}' (Cassio supports {})",
            name_of(first).chars().take(64).collect::<String>(),
            all_commands().map(|c| c.0).collect::<Vec<_>>().join(" ")
        )),
    }
}

/// What `AUTH` (alone or in `HELLO`) is told on a node without users:
/// accepting any password would pretend it was checked.
const NO_AUTH: &str = "ERR AUTH refused: this node has no users configured ([[users]] in its config file), so there is no password to check; connect without AUTH";

/// Why a client name is refused, as Redis words it: names show up in
/// space-separated listings, so they may not contain spaces or controls.
fn client_name_error(name: &[u8]) -> Option<&'static str> {
    name.iter()
        .any(|b| *b <= b' ' || *b > b'~')
        .then_some("ERR Client names cannot contain spaces, newlines or special characters.")
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`:
/// switches the connection to RESP2 or RESP3 (no `protover` keeps the
/// current one) and answers the server's facts in the new protocol. As in
/// Redis, options are checked whole before anything changes, so a refused
/// `HELLO` leaves the protocol and the name as they were.
fn hello(args: &[Bytes], conn: &mut Conn) -> Plan {
    let proto = match args.get(1).map(|v| &v[..]) {
        None => conn.proto,
        Some(b"2") => Proto::Resp2,
        Some(b"3") => Proto::Resp3,
        Some(_) => return err("NOPROTO unsupported protocol version"),
    };
    let mut i = 2;
    let mut auth = false;
    let mut name = None;
    while i < args.len() {
        let more = args.len() - 1 - i;
        match name_of(&args[i]).as_str() {
            "AUTH" if more >= 2 => {
                auth = true;
                i += 3;
            }
            "SETNAME" if more >= 1 => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            other => {
                return err(format!(
                    "ERR syntax error in HELLO option '{}'",
                    other.chars().take(64).collect::<String>()
                ))
            }
        }
    }
    if auth {
        return err(NO_AUTH);
    }
    if let Some(name) = name {
        if let Some(e) = client_name_error(&name) {
            return err(e);
        }
        conn.name = (!name.is_empty()).then_some(name);
    }
    conn.proto = proto;
    let s = Reply::bulk_str;
    Plan::Ready(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(COMPAT_REDIS_VERSION)),
        (s("proto"), Reply::Int(proto.version())),
        (
            s("id"),
            Reply::Int(i64::try_from(conn.id).unwrap_or(i64::MAX)),
        ),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ]))
}

/// A supported command as `COMMAND` reports it: name, arity (negative = at
/// least), flags, first key, last key, key step.
type CommandSpec = (&'static str, i64, &'static [&'static str], i64, i64, i64);

/// Every supported command.
const COMMANDS: &[CommandSpec] = &[
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", 3, &["write", "denyoom"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("unlink", -2, &["write", "fast"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("ping", -1, &["fast", "stale"], 0, 0, 0),
    ("echo", 2, &["fast", "stale"], 0, 0, 0),
    ("quit", -1, &["fast", "stale"], 0, 0, 0),
    ("hello", -1, &["fast", "stale", "noauth"], 0, 0, 0),
    (
        "auth",
        -2,
        &["fast", "stale", "noauth", "noscript", "loading"],
        0,
        0,
        0,
    ),
    ("info", -1, &["stale"], 0, 0, 0),
    ("command", -1, &["stale"], 0, 0, 0),
    ("client", -2, &["stale"], 0, 0, 0),
    ("select", 2, &["fast", "stale"], 0, 0, 0),
    ("cassio.keyspace", -1, &["fast", "stale"], 0, 0, 0),
    ("config", -2, &["stale"], 0, 0, 0),
    ("cassio.consistency", -1, &["fast"], 0, 0, 0),
    ("reset", 1, &["fast", "stale", "noauth"], 0, 0, 0),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    ("hset", -4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hmset", -4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hsetnx", 4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hget", 3, &["readonly", "fast"], 1, 1, 1),
    ("hmget", -3, &["readonly", "fast"], 1, 1, 1),
    ("hdel", -3, &["write", "fast"], 1, 1, 1),
    ("hgetall", 2, &["readonly"], 1, 1, 1),
    ("hkeys", 2, &["readonly"], 1, 1, 1),
    ("hvals", 2, &["readonly"], 1, 1, 1),
    ("hlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("hexists", 3, &["readonly", "fast"], 1, 1, 1),
    ("hscan", -3, &["readonly"], 1, 1, 1),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
];

/// Every supported command, this file's and `resp_expiry.rs`'s.
pub(super) fn all_commands() -> impl Iterator<Item = &'static CommandSpec> {
    COMMANDS.iter().chain(expiry::COMMANDS)
}

fn command_info(name: &str) -> Reply {
    let Some(c) = all_commands().find(|c| c.0.eq_ignore_ascii_case(name)) else {
        return Reply::Bulk(None);
    };
    Reply::Array(vec![
        Reply::bulk_str(c.0),
        Reply::Int(c.1),
        // Redis 7 answers the flags as a set (an array in RESP2).
        Reply::Set(c.2.iter().map(|f| Reply::bulk_str(f)).collect()),
        Reply::Int(c.3),
        Reply::Int(c.4),
        Reply::Int(c.5),
    ])
}

/// `COMMAND`, `COMMAND COUNT|INFO|LIST|DOCS`.
fn command(args: &[Bytes]) -> Plan {
    let Some(sub) = args.get(1) else {
        return Plan::Ready(Reply::Array(
            all_commands().map(|c| command_info(c.0)).collect(),
        ));
    };
    let sub = name_of(sub);
    let rest = || {
        args.iter()
            .skip(2)
            .map(|a| String::from_utf8_lossy(a).to_string())
    };
    Plan::Ready(match sub.as_str() {
        "COUNT" => Reply::Int(i64::try_from(all_commands().count()).unwrap_or(i64::MAX)),
        "INFO" => Reply::Array(rest().map(|n| command_info(&n)).collect()),
        "LIST" => Reply::Array(all_commands().map(|c| Reply::bulk_str(c.0)).collect()),
        "DOCS" => conn_cmds::command_docs(args),
        other => Reply::Error(format!(
            "ERR COMMAND {other} is not supported by Cassio (try COUNT, INFO, LIST, DOCS)"
        )),
    })
}

/// The reply to a failed node request, with a code clients can match on.
fn request_error(e: &RequestError) -> Reply {
    let code = match e {
        RequestError::Client(ClientError::Unavailable { .. }) => "UNAVAILABLE",
        RequestError::Client(ClientError::Timeout { .. }) => "TIMEOUT",
        RequestError::Client(ClientError::Joining | ClientError::ChainChanging) => "TRYAGAIN",
        RequestError::Client(ClientError::ClockOffset { .. }) => "CLOCKOFFSET",
        RequestError::Client(ClientError::ConfigMismatch { .. }) => "CONFIGMISMATCH",
        RequestError::Client(ClientError::Contended { .. }) => "CONTENDED",
        // Redis' code for "the server is busy, retry later".
        RequestError::Client(ClientError::Overloaded) => "BUSY",
        _ => "ERR",
    };
    Reply::Error(format!("{code} {e}"))
}

async fn get(
    handle: &NodeHandle,
    key: &Bytes,
    c: Option<Consistency>,
    ks: &str,
) -> Result<Option<Bytes>, RequestError> {
    let mut req = ClientRequest::get(key.clone()).in_keyspace(ks);
    req.consistency = c;
    match execute(handle, PROTOCOL, req).await? {
        ClientResponse::Value(v) | ClientResponse::Entry { value: v, .. } => Ok(v),
        ClientResponse::Written { .. }
        | ClientResponse::SchemaChanged { .. }
        | ClientResponse::Page { .. }
        | ClientResponse::Cells { .. }
        | ClientResponse::Swapped(_)
        | ClientResponse::Counter(_) => Err(RequestError::BadRequest(
            "the node answered a read with a write acknowledgement".into(),
        )),
    }
}

async fn put(
    handle: &NodeHandle,
    key: &Bytes,
    value: &Bytes,
    c: Option<Consistency>,
    ks: &str,
) -> Result<(), RequestError> {
    let mut req = ClientRequest::put(key.clone(), value.clone()).in_keyspace(ks);
    req.consistency = c;
    execute(handle, PROTOCOL, req).await.map(|_| ())
}

async fn delete(
    handle: &NodeHandle,
    key: &Bytes,
    c: Option<Consistency>,
    ks: &str,
) -> Result<bool, RequestError> {
    let existed = get(handle, key, c, ks).await?.is_some();
    let mut req = ClientRequest::delete(key.clone()).in_keyspace(ks);
    req.consistency = c;
    execute(handle, PROTOCOL, req).await?;
    Ok(existed)
}

fn count(n: usize) -> Reply {
    Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Runs one command's node work; keys of multi-key commands concurrently.
async fn run_io(handle: &NodeHandle, op: &IoOp) -> Reply {
    use futures_util::future::join_all;
    let c = op.consistency;
    let ks: &str = &op.keyspace;
    match &op.kind {
        IoKind::Get(k) => match get(handle, k, c, ks).await {
            Ok(v) => Reply::Bulk(v),
            Err(e) => request_error(&e),
        },
        IoKind::Set(k, v) => match put(handle, k, v, c, ks).await {
            Ok(()) => Reply::Simple("OK"),
            Err(e) => request_error(&e),
        },
        IoKind::MGet(keys) => {
            let got = join_all(keys.iter().map(|k| get(handle, k, c, ks))).await;
            let mut items = Vec::with_capacity(got.len());
            for g in got {
                match g {
                    Ok(v) => items.push(Reply::Bulk(v)),
                    Err(e) => return request_error(&e),
                }
            }
            Reply::Array(items)
        }
        IoKind::Exists(keys) => {
            let got = join_all(keys.iter().map(|k| get(handle, k, c, ks))).await;
            let mut n = 0;
            for g in got {
                match g {
                    Ok(v) => n += usize::from(v.is_some()),
                    Err(e) => return request_error(&e),
                }
            }
            count(n)
        }
        IoKind::Del(keys) => {
            let done = join_all(keys.iter().map(|k| delete(handle, k, c, ks))).await;
            let mut n = 0;
            for d in done {
                match d {
                    Ok(existed) => n += usize::from(existed),
                    Err(e) => return request_error(&e),
                }
            }
            count(n)
        }
        IoKind::MSet(pairs) => {
            let done = join_all(pairs.iter().map(|(k, v)| put(handle, k, v, c, ks))).await;
            match done.into_iter().find_map(Result::err) {
                None => Reply::Simple("OK"),
                Some(e) => request_error(&e),
            }
        }
        IoKind::Info(section, port) => info(handle, section.as_deref(), *port).await,
        IoKind::Expiry(e) => expiry::run(handle, e, c, ks).await,
        IoKind::Scan(kind) => resp_scan::run(handle, kind, ks, c).await,
        IoKind::Hash(h) => hash::run(handle, h, c, ks).await,
        IoKind::Incr(k, by) => {
            let req = ClientRequest {
                keyspace: ks.to_string(),
                op: cassio_core::ClientOp::Incr {
                    key: k.clone(),
                    by: *by,
                },
                consistency: c,
            };
            match execute(handle, PROTOCOL, req).await {
                Ok(ClientResponse::Counter(n)) => Reply::Int(n),
                Ok(other) => Reply::Error(format!(
                    "ERR the node answered an increment with {}",
                    response_kind(&other)
                )),
                Err(e) => request_error(&e),
            }
        }
    }
}

/// What kind of answer a node gave, for errors about unexpected ones.
fn response_kind(r: &ClientResponse) -> &'static str {
    match r {
        ClientResponse::Value(_) | ClientResponse::Entry { .. } => "a value",
        ClientResponse::Written { .. } => "a write acknowledgement",
        ClientResponse::Page { .. } => "a scan page",
        ClientResponse::Cells { .. } => "cells",
        ClientResponse::SchemaChanged { .. } => "a schema change",
        ClientResponse::Swapped(_) => "a compare-and-set outcome",
        ClientResponse::Counter(_) => "a counter",
    }
}

/// `INFO [section]`: server facts and the cluster as this node sees it.
async fn info(handle: &NodeHandle, section: Option<&str>, port: u16) -> Reply {
    let want = |s: &str| {
        matches!(section, None | Some("all" | "everything" | "default")) || section == Some(s)
    };
    let mut text = String::new();
    if want("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{COMPAT_REDIS_VERSION}\r\ncassio_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            port,
        ));
    }
    text.push_str(&conn_cmds::static_info(&want));
    if want("replication") {
        text.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if want("cluster") || want("cassio") {
        match handle.status().await {
            Ok(st) => {
                let up = st.members.iter().filter(|m| m.up).count();
                text.push_str(&format!(
                    "# Cassio\r\ncluster_name:{}\r\nnode_id:{}\r\nmembers:{}\r\nmembers_up:{}\r\n",
                    st.cluster,
                    st.local_id,
                    st.members.len(),
                    up
                ));
                for m in &st.members {
                    text.push_str(&format!(
                        "member_{}:addr={},state={},up={},load={},ownership={:.4},generation={}\r\n",
                        m.id, m.addr, m.state, u8::from(m.up), m.load, m.ownership, m.generation
                    ));
                }
                text.push_str("\r\n");
            }
            Err(e) => return request_error(&e),
        }
    }
    Reply::Text(Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn conn() -> Conn {
        Conn {
            id: 1,
            name: None,
            proto: Proto::Resp2,
            consistency: None,
            keyspace: Arc::from("default"),
            quit: false,
            port: 0,
            max_keys: 3,
            auth: None,
            user: None,
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            lib_name: None,
            lib_ver: None,
        }
    }

    fn cmd(s: &str) -> Vec<Bytes> {
        s.split(' ').map(b).collect()
    }

    #[test]
    fn waves_split_only_on_read_write_conflicts() {
        let mut c = conn();
        let plans: Vec<Plan> = [
            "SET a 1", "SET a 2", "GET b", "PING", "GET a", "SET c 1", "GET a", "MGET c d",
        ]
        .iter()
        .map(|s| plan(cmd(s), &mut c))
        .collect();
        // SET a, SET a, GET b, PING run together; GET a waits for the sets.
        assert_eq!(wave_end(&plans, 0), 4);
        // GET a, SET c, GET a together; MGET c waits for SET c.
        assert_eq!(wave_end(&plans, 4), 7);
        assert_eq!(wave_end(&plans, 7), 8);
    }

    #[test]
    fn keyspace_is_captured_in_command_order() {
        let mut c = conn();
        let p1 = plan(cmd("SET a 1"), &mut c);
        assert!(matches!(
            plan(cmd("CASSIO.KEYSPACE orders"), &mut c),
            Plan::Ready(Reply::Simple("OK"))
        ));
        let p2 = plan(cmd("SET a 1"), &mut c);
        let ks = |p: &Plan| match p {
            Plan::Io(op) => op.keyspace.to_string(),
            _ => String::new(),
        };
        assert_eq!((ks(&p1), ks(&p2)), ("default".into(), "orders".into()));
        assert!(matches!(
            plan(cmd("CASSIO.KEYSPACE"), &mut c),
            Plan::Ready(Reply::Bulk(Some(ref v))) if &v[..] == b"orders"
        ));
        // A name no keyspace can have is refused at once; the keyspace is kept.
        assert!(matches!(
            plan(cmd("CASSIO.KEYSPACE #1"), &mut c),
            Plan::Ready(Reply::Error(_))
        ));
        assert_eq!(ks(&plan(cmd("GET a"), &mut c)), "orders");
    }

    #[test]
    fn consistency_is_captured_in_command_order() {
        let mut c = conn();
        let p1 = plan(cmd("GET a"), &mut c);
        assert!(matches!(
            plan(cmd("CASSIO.CONSISTENCY all"), &mut c),
            Plan::Ready(Reply::Simple("OK"))
        ));
        let p2 = plan(cmd("GET a"), &mut c);
        assert!(matches!(
            p1,
            Plan::Io(IoOp {
                consistency: None,
                ..
            })
        ));
        assert!(matches!(
            p2,
            Plan::Io(IoOp {
                consistency: Some(Consistency::All),
                ..
            })
        ));
        assert!(matches!(
            plan(cmd("CASSIO.CONSISTENCY bogus"), &mut c),
            Plan::Ready(Reply::Error(_))
        ));
    }

    #[test]
    fn unsupported_things_are_named() {
        let mut c = conn();
        let Plan::Ready(Reply::Error(e)) = plan(cmd("SET k v EX 10 LATER"), &mut c) else {
            panic!("an unknown SET option should be refused");
        };
        assert_eq!(e, "ERR syntax error");
        assert!(matches!(
            plan(cmd("SET k v EX 10"), &mut c),
            Plan::Io(IoOp {
                kind: IoKind::Expiry(_),
                ..
            })
        ));
        let Plan::Ready(Reply::Error(e)) = plan(cmd("HINCRBY h f 1"), &mut c) else {
            panic!("HINCRBY should be refused");
        };
        assert!(e.contains("'HINCRBY'"), "{e}");
        for bad in ["HELLO 4", "HELLO 1", "HELLO x", "HELLO 03"] {
            let Plan::Ready(Reply::Error(e)) = plan(cmd(bad), &mut c) else {
                panic!("{bad} should be refused");
            };
            assert_eq!(e, "NOPROTO unsupported protocol version");
        }
        assert_eq!(c.proto, Proto::Resp2);
    }

    #[test]
    fn hello_switches_the_protocol_only_when_it_succeeds() {
        let mut c = conn();
        assert!(matches!(
            plan(cmd("HELLO"), &mut c),
            Plan::Ready(Reply::Map(_))
        ));
        assert_eq!(c.proto, Proto::Resp2);
        assert!(matches!(
            plan(cmd("HELLO 3"), &mut c),
            Plan::Ready(Reply::Map(_))
        ));
        assert_eq!(c.proto, Proto::Resp3);
        // No protover keeps RESP3.
        assert!(matches!(
            plan(cmd("HELLO"), &mut c),
            Plan::Ready(Reply::Map(_))
        ));
        assert_eq!(c.proto, Proto::Resp3);
        // Refused HELLOs change nothing: not the protocol, not the name.
        for bad in [
            "HELLO 2 AUTH default secret",
            "HELLO 2 SETNAME app AUTH u p",
            "HELLO 2 SETNAME",
            "HELLO 2 AUTH onlyuser",
            "HELLO 2 BOGUS",
        ] {
            let Plan::Ready(Reply::Error(e)) = plan(cmd(bad), &mut c) else {
                panic!("{bad} should be refused");
            };
            assert!(!e.is_empty());
            assert_eq!(c.proto, Proto::Resp3, "{bad}");
            assert_eq!(c.name, None, "{bad}");
        }
        let Plan::Ready(Reply::Error(e)) = plan(cmd("HELLO 2 AUTH default secret"), &mut c) else {
            panic!("AUTH should be refused");
        };
        assert!(e.contains("no users configured"), "{e}");
        let Plan::Ready(Reply::Error(e)) = plan(cmd("AUTH secret"), &mut c) else {
            panic!("AUTH should be refused");
        };
        assert!(e.contains("no users configured"), "{e}");
        assert!(matches!(
            plan(cmd("HELLO 2 SETNAME app"), &mut c),
            Plan::Ready(Reply::Map(_))
        ));
        assert_eq!(c.proto, Proto::Resp2);
        assert_eq!(c.name.as_deref(), Some(&b"app"[..]));
    }

    fn encoded(r: &Reply, p: Proto) -> Vec<u8> {
        let mut out = BytesMut::new();
        r.encode(&mut out, p);
        out.to_vec()
    }

    #[test]
    fn replies_take_resp3_types_only_under_resp3() {
        let r = Reply::Array(vec![
            Reply::Bulk(None),
            Reply::Map(vec![(Reply::bulk_str("k"), Reply::Int(1))]),
            Reply::Set(vec![Reply::bulk_str("f")]),
            Reply::Text(Bytes::from_static(b"a:1\r\n")),
            Reply::Simple("OK"),
            Reply::Error("ERR x".into()),
        ]);
        assert_eq!(
            encoded(&r, Proto::Resp2),
            b"*6\r\n$-1\r\n*2\r\n$1\r\nk\r\n:1\r\n*1\r\n$1\r\nf\r\n$5\r\na:1\r\n\r\n+OK\r\n-ERR x\r\n"
        );
        assert_eq!(
            encoded(&r, Proto::Resp3),
            b"*6\r\n_\r\n%1\r\n$1\r\nk\r\n:1\r\n~1\r\n$1\r\nf\r\n=9\r\ntxt:a:1\r\n\r\n+OK\r\n-ERR x\r\n"
        );
    }

    #[test]
    fn multi_key_commands_over_the_key_cap_are_refused_naming_it() {
        let mut c = conn();
        for cmd_text in [
            "MGET a b c d",
            "DEL a b c d",
            "EXISTS a b c d",
            "MSET a 1 b 2 c 3 d 4",
        ] {
            let Plan::Ready(Reply::Error(e)) = plan(cmd(cmd_text), &mut c) else {
                panic!("{cmd_text} should be refused");
            };
            assert!(
                e.contains("names 4 keys") && e.contains("limit is 3 (max_keys_per_command)"),
                "{e}"
            );
        }
        assert!(matches!(plan(cmd("MGET a b c"), &mut c), Plan::Io(_)));
        assert!(matches!(plan(cmd("MSET a 1 b 2 c 3"), &mut c), Plan::Io(_)));
    }

    #[test]
    fn bare_client_and_config_are_arity_errors() {
        let mut c = conn();
        for name in ["CLIENT", "CONFIG", "client", "config"] {
            let Plan::Ready(Reply::Error(e)) = plan(cmd(name), &mut c) else {
                panic!("bare {name} should be an error");
            };
            assert!(e.starts_with("ERR wrong number of arguments"), "{e}");
        }
        let Plan::Ready(Reply::Error(e)) = plan(cmd("CONFIG GET"), &mut c) else {
            panic!("CONFIG GET without a parameter should be an error");
        };
        assert!(e.contains("config|get"), "{e}");
        assert!(matches!(
            plan(Vec::new(), &mut c),
            Plan::Ready(Reply::Error(_))
        ));
    }

    /// Parses one RESP2 or RESP3 reply off the front of `buf`: the rest, or
    /// why not.
    pub(super) fn one_reply(buf: &[u8]) -> Result<&[u8], String> {
        let line_end = buf.windows(2).position(|w| w == b"\r\n").ok_or("no CRLF")?;
        let (kind, line) = (buf.first().ok_or("empty")?, &buf[1..line_end]);
        let rest = &buf[line_end + 2..];
        let text = std::str::from_utf8(line).map_err(|e| e.to_string())?;
        match kind {
            b'+' | b'-' => {
                if text.contains('\r') || text.contains('\n') {
                    return Err(format!("line break inside {text:?}"));
                }
                Ok(rest)
            }
            b':' => text.parse::<i64>().map(|_| rest).map_err(|e| e.to_string()),
            b'$' | b'=' => {
                let n: i64 = text
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?;
                if n == -1 && *kind == b'$' {
                    return Ok(rest);
                }
                let n = usize::try_from(n).map_err(|e| e.to_string())?;
                if rest.len() < n + 2 || &rest[n..n + 2] != b"\r\n" {
                    return Err("bulk string shorter than announced".into());
                }
                if *kind == b'=' && (n < 4 || rest[3] != b':') {
                    return Err("verbatim string without its format".into());
                }
                Ok(&rest[n + 2..])
            }
            b'*' | b'~' | b'%' => {
                let n: usize = text
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?;
                let n = if *kind == b'%' { n * 2 } else { n };
                let mut rest = rest;
                for _ in 0..n {
                    rest = one_reply(rest)?;
                }
                Ok(rest)
            }
            b'_' if text.is_empty() => Ok(rest),
            b'#' if text == "t" || text == "f" => Ok(rest),
            b',' => match text {
                "inf" | "-inf" | "nan" => Ok(rest),
                _ => text.parse::<f64>().map(|_| rest).map_err(|e| e.to_string()),
            },
            other => Err(format!("unknown reply type {:?}", char::from(*other))),
        }
    }

    #[test]
    fn the_reply_checker_rejects_what_is_not_one_reply() {
        assert_eq!(one_reply(b"+OK\r\n"), Ok(&b""[..]));
        assert_eq!(one_reply(b"*2\r\n$1\r\na\r\n:3\r\n"), Ok(&b""[..]));
        assert!(one_reply(b"$5\r\nab\r\n").is_err());
        assert!(one_reply(b"*2\r\n+OK\r\n").is_err());
        assert!(one_reply(b"OK\r\n").is_err());
        assert_eq!(one_reply(b"+OK\r\n+OK\r\n"), Ok(&b"+OK\r\n"[..]));
        assert_eq!(one_reply(b"%1\r\n$1\r\nk\r\n_\r\n"), Ok(&b""[..]));
        assert!(one_reply(b"%1\r\n$1\r\nk\r\n").is_err());
        assert!(one_reply(b"_x\r\n").is_err());
        assert!(one_reply(b"=3\r\ntxt\r\n").is_err());
        assert_eq!(one_reply(b"~1\r\n=5\r\ntxt:a\r\n"), Ok(&b""[..]));
    }

    /// A node double: reads succeed empty, writes succeed, status answers;
    /// keys starting with `busy` are refused as overloaded.
    pub(super) fn fake_handle() -> NodeHandle {
        use crate::handle::{ClusterStatus, Command};
        use cassio_core::{ClientOp, NodeId, Timestamp};
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Command>(64);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                match c {
                    Command::Status(reply) => {
                        let _ = reply.send(ClusterStatus {
                            local_id: 1,
                            cluster: "t".into(),
                            ..ClusterStatus::default()
                        });
                    }
                    Command::Repair(_, reply) => {
                        let _ =
                            reply.send(Err(RequestError::BadRequest("not in this test".into())));
                    }
                    Command::Decommission(reply) => {
                        let _ = reply.send(Err(crate::handle::RingOpError::NotRunning));
                    }
                    Command::ChangeSchema(_, reply) => {
                        let _ = reply.send(Err(RequestError::NotRunning));
                    }
                    Command::RemoveDead(_, reply) => {
                        let _ = reply.send(Err(crate::handle::RingOpError::NotRunning));
                    }
                    // Dropping the reply answers `NotRunning`.
                    Command::Layout(_) => {}
                    Command::Request(req, reply) => {
                        let key = req.op.key().clone();
                        let res = if key.starts_with(b"busy") {
                            Err(RequestError::Client(ClientError::Overloaded))
                        } else if matches!(req.op, ClientOp::Get { .. }) {
                            Ok(ClientResponse::Value(None))
                        } else {
                            Ok(ClientResponse::Written {
                                ts: Timestamp::new(1, 0, NodeId(1)),
                            })
                        };
                        let _ = reply.send(res);
                    }
                }
            }
        });
        NodeHandle::new(tx)
    }

    /// Answers `cmd` as a connection would, into the bytes sent back.
    fn answer(rt: &tokio::runtime::Runtime, cmd: Vec<Bytes>) -> BytesMut {
        answer_in(rt, cmd, Proto::Resp2)
    }

    /// [`answer`] on a connection speaking `proto`.
    fn answer_in(rt: &tokio::runtime::Runtime, cmd: Vec<Bytes>, proto: Proto) -> BytesMut {
        rt.block_on(async move {
            let handle = fake_handle();
            let mut c = conn();
            c.proto = proto;
            let mut out = BytesMut::new();
            run_batch(&handle, &mut c, vec![cmd], &mut out).await;
            out
        })
    }

    #[test]
    fn overloaded_is_answered_busy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let out = answer(&rt, cmd("GET busy-key"));
        assert!(
            out.starts_with(b"-BUSY "),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(String::from_utf8_lossy(&out).contains("back off and retry"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Words the handlers branch on, so arguments reach every arm.
        const WORDS: &[&str] = &[
            "GET",
            "SETNAME",
            "GETNAME",
            "ID",
            "SETINFO",
            "COUNT",
            "INFO",
            "LIST",
            "DOCS",
            "0",
            "1",
            "2",
            "3",
            "AUTH",
            "all",
            "quorum",
            "default",
            "one",
            "save",
            "appendonly",
            "databases",
            "EX",
            "busy",
            "",
            " ",
            "\r\n",
            "server",
            "cluster",
        ];

        fn names() -> Vec<String> {
            let mut v: Vec<String> = all_commands().map(|c| c.0.to_string()).collect();
            v.extend(all_commands().map(|c| c.0.to_ascii_uppercase()));
            // Unknown ones, odd ones, and names longer than the name buffer.
            v.extend(
                [
                    "FLUSHALL",
                    "",
                    "x",
                    "GETX",
                    "CASSIO.",
                    "\u{e9}t\u{e9}",
                    "A_VERY_LONG_COMMAND_NAME_INDEED",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            v
        }

        fn arg() -> impl Strategy<Value = Bytes> {
            prop_oneof![
                prop::sample::select(WORDS).prop_map(|w| Bytes::copy_from_slice(w.as_bytes())),
                prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Every command the gateway knows (and some it does not), with
            /// 0 to 3 arbitrary arguments: no panic, and exactly one
            /// well-formed reply.
            #[test]
            fn every_command_with_up_to_three_arguments_gets_one_reply(
                name in prop::sample::select(names()),
                args in prop::collection::vec(arg(), 0..=3),
                resp3 in any::<bool>(),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("runtime: {e}"));
                let mut full = vec![Bytes::from(name.clone())];
                full.extend(args);
                let proto = if resp3 { Proto::Resp3 } else { Proto::Resp2 };
                let out = answer_in(&rt, full.clone(), proto);
                let rest = one_reply(&out);
                prop_assert_eq!(rest, Ok(&b""[..]), "{:?} answered {:?}", full, String::from_utf8_lossy(&out));
            }
        }

        #[test]
        fn every_known_name_with_zero_to_three_empty_arguments() {
            // The exhaustive corner the random search may miss: each known
            // command with exactly 0, 1, 2 and 3 empty arguments.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            for name in names() {
                for n in 0..=3 {
                    let mut full = vec![Bytes::from(name.clone())];
                    full.extend(std::iter::repeat_n(Bytes::new(), n));
                    for proto in [Proto::Resp2, Proto::Resp3] {
                        let out = answer_in(&rt, full.clone(), proto);
                        assert_eq!(one_reply(&out), Ok(&b""[..]), "{full:?} {proto:?}");
                    }
                }
            }
        }
    }
}
