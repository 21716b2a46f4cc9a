//! The native Rust client: talks [`crate::proto`] to any node's client port.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cassio_node::client::Error> {
//! use cassio_node::client::Client;
//! let client = Client::connect(&["127.0.0.1:7379".parse().unwrap()]).await?;
//! client.set("user1", "Jack", None).await?;
//! assert_eq!(client.get("user1", None).await?.as_deref(), Some(&b"Jack"[..]));
//! client.del("user1", Some(cassio_core::Consistency::All)).await?;
//! # Ok(()) }
//! ```
//!
//! Every node can coordinate any request, so the client keeps one
//! connection to one node and moves to the next known address when that
//! connection fails (refused, reset, or silent past the timeout). Errors the
//! cluster reports (`Unavailable`, `Timeout`, ...) are returned as they are:
//! another coordinator would see the same replicas. The exceptions are a
//! node that is stopping, `Overloaded`, or still `Joining` (its view of the
//! ring has not settled): the next node is asked, and if every node says so, that error
//! is returned.
//!
//! On a node with users, [`ClientConfig::credentials`] logs every new
//! connection in before its first request; with [`ClientConfig::tls`] the
//! client speaks TLS and checks the node's certificate against a CA. A
//! connection the node closed while it sat unused (its `idle_timeout`) is
//! replaced once, silently, before the node counts as failed.
//!
//! Token-aware routing ([`ClientConfig::token_aware`], off by default):
//! the client fetches the cluster's layout ([`Client::layout`]) from any
//! node, keeps a connection per node, and sends each data request (get,
//! set, set with a TTL, del, hset, hget, hdel, hgetall) to a replica of its
//! key, which then coordinates it: no forwarding hop through a
//! non-replica. Scans, status and keyspace changes take the plain path. Any
//! failure of a routed request falls back to the plain path, so routing
//! never fails a request the plain client would serve; see
//! [`Client::routing_stats`] for what it did.
//!
//! Keyspaces: `Client`'s own data methods address `default`;
//! [`Client::keyspace`] gives a [`KeyspaceHandle`] with the same methods in
//! another keyspace, on the same connection. [`Client::list_keyspaces`],
//! [`Client::create_keyspace`], [`Client::alter_keyspace`] and
//! [`Client::drop_keyspace`] manage them ([`KeyspaceList`] is a listing).

mod keyspace;
mod routing;

use crate::handle::{ClusterStatus, RequestError};
pub use crate::proto::KeyspaceList;
use crate::proto::{self, ProtoError, Reply, Request, RequestOp, Response};
use bytes::Bytes;
use cassio_core::{ClientError, Consistency, Timestamp};
use core::net::SocketAddr;
pub use keyspace::{KeyspaceHandle, CHANGE_TIMEOUT};
pub use routing::RoutingStats;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node address was given.
    #[error("no node addresses given")]
    NoNodes,
    /// A node failed at the connection level (the last one tried, when
    /// every known node failed).
    #[error("node {addr} could not be reached: {reason}")]
    Unreachable {
        /// The last node tried.
        addr: SocketAddr,
        /// What failed there.
        reason: String,
    },
    /// The cluster answered with an error.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The TLS settings could not be used.
    #[error("client TLS: {detail}")]
    Tls {
        /// What was wrong.
        detail: String,
    },
    /// The node answered something this client does not expect.
    #[error("unexpected answer from {addr}: {detail}")]
    Protocol {
        /// The node.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// The coordinator's typed error, if this is one (e.g. `Unavailable`).
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            Error::Request(RequestError::Client(c)) => Some(c),
            _ => None,
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one attempt (on one node) may take before the client gives
    /// up on that connection and tries the next node.
    pub request_timeout: Duration,
    /// How long connecting to one node may take.
    pub connect_timeout: Duration,
    /// User and password sent on every new connection (nodes with users).
    pub credentials: Option<Credentials>,
    /// TLS to the nodes' client ports (`None`: plaintext).
    pub tls: Option<ClientTls>,
    /// Token-aware routing (off by default): send each data request
    /// (get, set, set with a TTL, del, and the row operations) straight to
    /// a replica of its key, by the cluster's layout fetched at connect and
    /// refreshed as it changes; see [`Client`]'s documentation.
    pub token_aware: bool,
    /// With `token_aware`: how often the layout is fetched again (at the
    /// first request after this much time).
    pub layout_refresh: Duration,
    /// With `token_aware`: prefer replicas in this datacenter.
    pub datacenter: Option<String>,
    /// With `token_aware`: at most this many per-node connections (past
    /// them, requests take the plain path).
    pub max_node_connections: usize,
}

/// A user name and password.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How the client speaks TLS: the CAs it trusts and the name it expects in
/// the nodes' certificates.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in the PEM file `ca`, and expects
    /// `server_name` (a DNS name or an IP address) in node certificates.
    pub fn from_ca_file(ca: &std::path::Path, server_name: &str) -> Result<ClientTls, Error> {
        let bad = |detail: String| Error::Tls { detail };
        let certs = cassio_transport_tcp::tls::read_certs(ca).map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots
                .add(c)
                .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
        }
        let config =
            rustls::ClientConfig::builder_with_provider(cassio_transport_tcp::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| bad(format!("server name {server_name:?}: {e}")))?;
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            credentials: None,
            tls: None,
            token_aware: false,
            layout_refresh: Duration::from_secs(5),
            datacenter: None,
            max_node_connections: 64,
        }
    }
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    addr: SocketAddr,
    rd: BufReader<ReadHalf<Box<dyn Stream>>>,
    wr: BufWriter<WriteHalf<Box<dyn Stream>>>,
}

struct State {
    conn: Option<Conn>,
    /// Index into `addrs` of the node to use next.
    current: usize,
    next_id: u64,
}

/// A connection to a Cassio cluster through its native protocol.
pub struct Client {
    addrs: Vec<SocketAddr>,
    config: ClientConfig,
    state: tokio::sync::Mutex<State>,
    /// Token-aware routing, when on.
    router: Option<routing::Router>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.addrs)
            .finish()
    }
}

/// A page of a scan: entries (key, value) and the next page's cursor.
pub type ScanPage = (Vec<(Bytes, Bytes)>, Option<Bytes>);

/// A connection-level failure: worth trying another node.
struct Failover(String);

/// How a [`Failover`] for a request that got no answer in time begins.
const NO_ANSWER: &str = "no answer within";

impl Client {
    /// Connects to the first reachable node of `addrs` with default settings.
    pub async fn connect(addrs: &[SocketAddr]) -> Result<Client, Error> {
        Self::connect_with(addrs, ClientConfig::default()).await
    }

    /// Connects to the first reachable node of `addrs`.
    pub async fn connect_with(addrs: &[SocketAddr], config: ClientConfig) -> Result<Client, Error> {
        if addrs.is_empty() {
            return Err(Error::NoNodes);
        }
        let router = config.token_aware.then(routing::Router::default);
        let client = Client {
            addrs: addrs.to_vec(),
            config,
            state: tokio::sync::Mutex::new(State {
                conn: None,
                current: 0,
                next_id: 1,
            }),
            router,
        };
        client.call(RequestOp::Ping).await?;
        if client.router.is_some() {
            // Without a layout (a node that does not answer it) requests
            // take the plain path; the next refresh tries again.
            if let Err(e) = client.refresh_layout().await {
                tracing::debug!(error = %e, "no layout at connect: plain path until a refresh");
            }
        }
        Ok(client)
    }

    /// The node the client currently talks to, if connected.
    pub async fn current_node(&self) -> Option<SocketAddr> {
        self.state.lock().await.conn.as_ref().map(|c| c.addr)
    }

    /// Reads `key` in `default`; `None` when absent or deleted.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Option<Bytes>, Error> {
        self.default_keyspace().get(key, consistency).await
    }

    /// Writes `value` under `key` in `default`; returns the write's
    /// timestamp.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.default_keyspace().set(key, value, consistency).await
    }

    /// Writes `value` under `key` in `default`, to expire `ttl` after the
    /// write's timestamp (in the cluster's HLC time: every replica agrees
    /// when it ends); returns the write's timestamp. A `ttl` under a
    /// microsecond is refused, as is one too long to represent.
    pub async fn set_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: std::time::Duration,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.default_keyspace()
            .set_with_ttl(key, value, ttl, consistency)
            .await
    }

    /// Compare-and-set in `default`; see [`KeyspaceHandle::cas`]. `default`
    /// is last-write-wins, so this is refused there with
    /// `ClientError::InvalidOp`: use [`Client::keyspace`] to address a CRAQ
    /// keyspace.
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expected: Option<&[u8]>,
        new: impl Into<Bytes>,
    ) -> Result<bool, Error> {
        self.default_keyspace().cas(key, expected, new).await
    }

    /// Increments `key` in `default` by `by`; see [`KeyspaceHandle::incr`].
    /// Refused on the last-write-wins `default` as [`Client::cas`] is.
    pub async fn incr(&self, key: impl Into<Bytes>, by: i64) -> Result<i64, Error> {
        self.default_keyspace().incr(key, by).await
    }

    /// Deletes `key` in `default` (writes a tombstone); returns its
    /// timestamp.
    pub async fn del(
        &self,
        key: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.default_keyspace().del(key, consistency).await
    }

    /// One page of a scan of the default keyspace: up to `limit` keys
    /// starting with `prefix`, in token (hash) order, from `cursor` (a
    /// previous page's, or `None` for the start); returns the entries and
    /// the next page's cursor (`None`: the scan is complete).
    pub async fn scan_page(
        &self,
        prefix: impl Into<Bytes>,
        cursor: Option<Bytes>,
        limit: u32,
        consistency: Option<Consistency>,
    ) -> Result<ScanPage, Error> {
        self.default_keyspace()
            .scan_page(prefix, cursor, limit, consistency)
            .await
    }

    /// Every live key of `default` starting with `prefix` and its value,
    /// in token (hash) order, fetched in pages of `page` entries as the
    /// stream is read. A page that fails ends the stream with its error;
    /// no key present for the whole scan is missed or repeated.
    pub fn scan(
        &self,
        prefix: impl Into<Bytes>,
        page: u32,
        consistency: Option<Consistency>,
    ) -> impl futures_util::Stream<Item = Result<(Bytes, Bytes), Error>> + '_ {
        self.default_keyspace().scan(prefix, page, consistency)
    }

    /// Writes `value` in column `column` of row `row` in `default` (one
    /// cell: last write wins per cell, so writers of other columns never
    /// lose theirs); returns the write's timestamp.
    pub async fn hset(
        &self,
        row: impl Into<Bytes>,
        column: impl Into<Bytes>,
        value: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.default_keyspace()
            .hset(row, column, value, consistency)
            .await
    }

    /// Reads column `column` of row `row` in `default` (`None`: absent or
    /// deleted).
    pub async fn hget(
        &self,
        row: impl Into<Bytes>,
        column: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Option<Bytes>, Error> {
        self.default_keyspace().hget(row, column, consistency).await
    }

    /// Deletes column `column` of row `row` in `default`; returns the
    /// tombstone's timestamp.
    pub async fn hdel(
        &self,
        row: impl Into<Bytes>,
        column: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.default_keyspace().hdel(row, column, consistency).await
    }

    /// Row `row`'s live cells in `default`, (column, value) in column
    /// order (at most [`crate::proto::MAX_HGETALL`]).
    pub async fn hgetall(
        &self,
        row: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.default_keyspace().hgetall(row, consistency).await
    }

    /// The cluster as the connected node sees it.
    pub async fn status(&self) -> Result<ClusterStatus, Error> {
        match self.call(RequestOp::Status).await? {
            Reply::Status(s) => Ok(*s),
            other => Err(self.unexpected(other).await),
        }
    }

    async fn unexpected(&self, reply: Reply) -> Error {
        let addr = self.current_node().await.unwrap_or(self.addrs[0]);
        Error::Protocol {
            addr,
            detail: format!("{reply:?}"),
        }
    }

    /// Sends `op` to the current node, moving on to the next ones when the
    /// connection fails; each node is tried at most once per call.
    async fn call(&self, op: RequestOp) -> Result<Reply, Error> {
        self.call_within(op, self.config.request_timeout).await
    }

    /// [`Client::call`], waiting up to `timeout` for each node's answer.
    async fn call_within(&self, op: RequestOp, timeout: Duration) -> Result<Reply, Error> {
        let mut st = self.state.lock().await;
        let mut last = None;
        for _ in 0..self.addrs.len() {
            let addr = self.addrs[st.current % self.addrs.len()];
            let id = st.next_id;
            st.next_id += 1;
            match self.attempt(&mut st, addr, id, op.clone(), timeout).await {
                Ok(Ok(reply)) => return Ok(reply),
                // That node cannot coordinate (yet, or with its clock or
                // settings as they are); another one may.
                Ok(Err(
                    e @ RequestError::Client(
                        ClientError::Joining
                        | ClientError::ClockOffset { .. }
                        | ClientError::ConfigMismatch { .. },
                    ),
                )) => {
                    // That node cannot coordinate yet; another one may. The
                    // connection is fine, so it stays open for later calls.
                    st.current = (st.current + 1) % self.addrs.len();
                    last = Some(Error::Request(e));
                }
                Ok(Err(e @ RequestError::NotRunning))
                | Ok(Err(e @ RequestError::Client(ClientError::ShuttingDown)))
                | Ok(Err(e @ RequestError::Client(ClientError::Overloaded))) => {
                    // The node is stopping or overloaded (and may have closed
                    // the connection, past its connection cap): another one
                    // can serve this.
                    st.conn = None;
                    st.current = (st.current + 1) % self.addrs.len();
                    last = Some(Error::Request(e));
                }
                Ok(Err(e)) => return Err(Error::Request(e)),
                Err(Failover(reason)) => {
                    tracing::debug!(node = %addr, %reason, "node failed: trying the next one");
                    st.conn = None;
                    st.current = (st.current + 1) % self.addrs.len();
                    last = Some(Error::Unreachable { addr, reason });
                }
            }
        }
        Err(last.unwrap_or(Error::NoNodes))
    }

    async fn attempt(
        &self,
        st: &mut State,
        addr: SocketAddr,
        id: u64,
        op: RequestOp,
        timeout: Duration,
    ) -> Result<Result<Reply, RequestError>, Failover> {
        let reused = st.conn.as_ref().is_some_and(|c| c.addr == addr);
        if reused {
            match self.exchange(st, id, op.clone(), timeout).await {
                Ok(r) => return Ok(r),
                // A node that is slow to answer would be as slow again.
                Err(Failover(reason)) if reason.starts_with(NO_ANSWER) => {
                    return Err(Failover(reason))
                }
                // The node may have closed it while it sat unused (its
                // idle timeout): one fresh connection before giving up.
                Err(Failover(reason)) => {
                    tracing::debug!(node = %addr, %reason, "reused connection failed: reconnecting");
                    st.conn = None;
                }
            }
        }
        st.conn = Some(self.open(addr).await?);
        if let Some(c) = &self.config.credentials {
            let login = RequestOp::Auth {
                user: c.user.clone(),
                password: c.password.clone(),
            };
            let login_id = st.next_id;
            st.next_id += 1;
            match self
                .exchange(st, login_id, login, self.config.request_timeout)
                .await?
            {
                Ok(Reply::Authenticated) => {}
                Ok(other) => {
                    st.conn = None;
                    return Err(Failover(format!(
                        "unexpected answer to the login: {other:?}"
                    )));
                }
                Err(e) => {
                    st.conn = None;
                    return Ok(Err(e));
                }
            }
        }
        self.exchange(st, id, op, timeout).await
    }

    /// A new connection to `addr` (TLS when configured).
    async fn open(&self, addr: SocketAddr) -> Result<Conn, Failover> {
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| Failover(format!("connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = match &self.config.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(
                    tls.connector
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| Failover(format!("TLS handshake: {e}")))?,
                ),
            };
            Ok(stream)
        };
        let stream = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| Failover("connect timed out".into()))??;
        let (rd, wr) = tokio::io::split(stream);
        Ok(Conn {
            addr,
            rd: BufReader::new(rd),
            wr: BufWriter::new(wr),
        })
    }

    /// Sends one request on the current connection and waits for its answer.
    async fn exchange(
        &self,
        st: &mut State,
        id: u64,
        op: RequestOp,
        timeout: Duration,
    ) -> Result<Result<Reply, RequestError>, Failover> {
        let Some(conn) = st.conn.as_mut() else {
            return Err(Failover("not connected".into()));
        };
        let exchange = async {
            proto::write_msg(&mut conn.wr, &Request { id, op }).await?;
            conn.wr.flush().await?;
            loop {
                match proto::read_msg::<_, Response>(&mut conn.rd).await? {
                    Some(resp) if resp.id == id => return Ok(resp.result),
                    // A late answer to an attempt that timed out earlier.
                    Some(_) => continue,
                    None => {
                        return Err(ProtoError::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "node closed the connection",
                        )))
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(Failover(e.to_string())),
            Err(_) => Err(Failover(format!("{NO_ANSWER} {timeout:?}"))),
        }
    }
}
