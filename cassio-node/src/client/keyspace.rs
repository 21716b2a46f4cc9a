//! Keyspaces from the Rust client: [`KeyspaceHandle`] (data operations in
//! one keyspace, sharing the [`Client`]'s connection) and the keyspace
//! changes ([`Client::create_keyspace`] and the rest).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cassio_node::client::Error> {
//! use cassio_node::client::Client;
//! let client = Client::connect(&["127.0.0.1:7379".parse().unwrap()]).await?;
//! client.create_keyspace("orders", 3, None).await?;
//! let orders = client.keyspace("orders");
//! orders.set("o1", "paid", None).await?;
//! assert_eq!(orders.get("o1", None).await?.as_deref(), Some(&b"paid"[..]));
//! // The same key in `default` is another key.
//! assert_eq!(client.get("o1", None).await?, None);
//! # Ok(()) }
//! ```

use super::{Client, Error, ScanPage};
use crate::handle::RequestError;
use crate::proto::{KeyspaceList, Reply, RequestOp};
use bytes::Bytes;
use cassio_core::schema::SchemaError;
use cassio_core::schema_agreement::ChangeError;
use cassio_core::{ClientError, Consistency, Timestamp};
use std::time::Duration;

/// How long a keyspace change may take on one node at least: the node
/// answers once the cluster agreed on it (up to 20 s), longer than a read.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Data operations in one keyspace, on the connection of the [`Client`]
/// it came from ([`Client::keyspace`]). Cheap to make and to clone.
#[derive(Clone, Debug)]
pub struct KeyspaceHandle<'a> {
    client: &'a Client,
    /// `None`: `default`, sent unwrapped (as older nodes understand).
    keyspace: Option<String>,
}

impl Client {
    /// Operations in keyspace `name` (an unknown name is refused per
    /// request, with [`ClientError::UnknownKeyspace`]).
    pub fn keyspace(&self, name: impl Into<String>) -> KeyspaceHandle<'_> {
        KeyspaceHandle {
            client: self,
            keyspace: Some(name.into()),
        }
    }

    /// Operations in `default`, as older nodes understand them.
    pub(super) fn default_keyspace(&self) -> KeyspaceHandle<'_> {
        KeyspaceHandle {
            client: self,
            keyspace: None,
        }
    }

    /// The cluster's keyspaces as the connected node knows them. Needs the
    /// admin right on a node with users.
    pub async fn list_keyspaces(&self) -> Result<KeyspaceList, Error> {
        match self.call(RequestOp::ListKeyspaces).await? {
            Reply::Keyspaces(list) => Ok(list),
            other => Err(self.unexpected(other).await),
        }
    }

    /// Creates keyspace `name` holding each key on `replication_factor`
    /// nodes, its requests that name no level at `default_consistency`
    /// (`None`: `QUORUM`). Returns once the cluster agreed, with the schema
    /// version that holds it. Refusals are typed
    /// ([`Error::schema_error`]): a name in use is [`SchemaError::Exists`],
    /// a bad name [`SchemaError::InvalidName`]. Needs the admin right on a
    /// node with users.
    pub async fn create_keyspace(
        &self,
        name: impl Into<String>,
        replication_factor: usize,
        default_consistency: Option<Consistency>,
    ) -> Result<u64, Error> {
        self.change(RequestOp::CreateKeyspace {
            name: name.into(),
            replication_factor: wire_factor(replication_factor),
            default_consistency,
        })
        .await
    }

    /// Creates chain-replicated (CRAQ) keyspace `name`, each key on a chain
    /// of `replication_factor` nodes: linearizable reads and writes, and
    /// [`KeyspaceHandle::cas`] and [`KeyspaceHandle::incr`]. Its default
    /// level is `QUORUM` (`ONE` reads are weak, not linearizable); it
    /// offers no scans, cells or TTLs. Returns once the cluster agreed,
    /// with the schema version that holds it; refusals as
    /// [`Client::create_keyspace`]. Needs the admin right on a node with
    /// users.
    pub async fn create_craq_keyspace(
        &self,
        name: impl Into<String>,
        replication_factor: usize,
    ) -> Result<u64, Error> {
        self.change(RequestOp::CreateCraqKeyspace {
            name: name.into(),
            replication_factor: wire_factor(replication_factor),
        })
        .await
    }

    /// Changes keyspace `name`'s replication factor (by one per step; the
    /// next step waits until every replica was repaired under the last:
    /// [`SchemaError::RepairPending`]) and/or its default level; at least
    /// one must be given. Returns the schema version that holds the change.
    /// Needs the admin right on a node with users.
    pub async fn alter_keyspace(
        &self,
        name: impl Into<String>,
        replication_factor: Option<usize>,
        default_consistency: Option<Consistency>,
    ) -> Result<u64, Error> {
        self.change(RequestOp::AlterKeyspace {
            name: name.into(),
            replication_factor: replication_factor.map(wire_factor),
            default_consistency,
        })
        .await
    }

    /// Creates keyspace `name` placed by `replication`: a factor per
    /// datacenter (`Replication::parse("dc1:3,dc2:2")`), or a single factor
    /// spread over racks. Otherwise as [`Client::create_keyspace`].
    pub async fn create_placed_keyspace(
        &self,
        name: impl Into<String>,
        replication: cassio_core::topology::Replication,
        default_consistency: Option<Consistency>,
    ) -> Result<u64, Error> {
        self.change(RequestOp::CreatePlacedKeyspace {
            name: name.into(),
            replication,
            default_consistency,
        })
        .await
    }

    /// Changes keyspace `name`'s replication to `replication`: one
    /// datacenter's factor by one per step (or a single factor by one);
    /// switching between the two forms is refused
    /// ([`SchemaError::ReplicationMode`]). Returns the schema version that
    /// holds the change.
    pub async fn alter_keyspace_replication(
        &self,
        name: impl Into<String>,
        replication: cassio_core::topology::Replication,
    ) -> Result<u64, Error> {
        self.change(RequestOp::AlterKeyspaceReplication {
            name: name.into(),
            replication,
        })
        .await
    }

    /// Drops keyspace `name` (its data goes; a keyspace created again
    /// under the name starts empty). Returns the schema version that holds
    /// the change. Needs the admin right on a node with users.
    pub async fn drop_keyspace(&self, name: impl Into<String>) -> Result<u64, Error> {
        self.change(RequestOp::DropKeyspace { name: name.into() })
            .await
    }

    /// Sends a keyspace change and waits up to [`CHANGE_TIMEOUT`] (or the
    /// request timeout, if longer) for the cluster to agree. A change
    /// whose node failed before answering is sent to the next node, so a
    /// create that had in fact been made there may answer
    /// [`SchemaError::Exists`].
    async fn change(&self, op: RequestOp) -> Result<u64, Error> {
        let timeout = self.config.request_timeout.max(CHANGE_TIMEOUT);
        match self.call_within(op, timeout).await? {
            Reply::SchemaChanged { version } => Ok(version),
            other => Err(self.unexpected(other).await),
        }
    }
}

/// A factor as the wire carries it (a `u64` on every platform).
fn wire_factor(rf: usize) -> u64 {
    u64::try_from(rf).unwrap_or(u64::MAX)
}

impl Error {
    /// Why the cluster refused a keyspace change (or a request's keyspace),
    /// if that is what this is: [`ChangeError::Invalid`] with the
    /// [`SchemaError`] (exists, unknown, repair pending, ...), or no quorum
    /// of the schema's voters.
    pub fn schema_error(&self) -> Option<&ChangeError> {
        match self.client_error() {
            Some(ClientError::Schema(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether the request named a keyspace the cluster does not have (a
    /// data operation's [`ClientError::UnknownKeyspace`], or a change's
    /// [`SchemaError::Unknown`]).
    pub fn is_unknown_keyspace(&self) -> bool {
        matches!(self.client_error(), Some(ClientError::UnknownKeyspace(_)))
            || matches!(
                self.schema_error(),
                Some(ChangeError::Invalid(SchemaError::Unknown(_)))
            )
    }

    /// Whether the node refused this for the user's rights (or a missing
    /// login).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Request(RequestError::Unauthorized(_)))
    }
}

impl<'a> KeyspaceHandle<'a> {
    /// The keyspace these operations address.
    pub fn name(&self) -> &str {
        self.keyspace
            .as_deref()
            .unwrap_or(cassio_core::DEFAULT_KEYSPACE)
    }

    /// `op` addressed to this keyspace.
    fn wrap(&self, op: RequestOp) -> RequestOp {
        match &self.keyspace {
            None => op,
            Some(ks) => RequestOp::InKeyspace {
                keyspace: ks.clone(),
                op: Box::new(op),
            },
        }
    }

    async fn call(&self, op: RequestOp) -> Result<Reply, Error> {
        // The key placement is decided by: a row's cells live with the row.
        let key = match &op {
            RequestOp::Get { key, .. }
            | RequestOp::Set { key, .. }
            | RequestOp::SetExpiring { key, .. }
            | RequestOp::Del { key, .. }
            | RequestOp::Cas { key, .. }
            | RequestOp::Incr { key, .. } => Some(key.clone()),
            RequestOp::HSet { row, .. }
            | RequestOp::HGet { row, .. }
            | RequestOp::HDel { row, .. }
            | RequestOp::HGetAll { row, .. } => Some(row.clone()),
            _ => None,
        };
        self.client
            .call_routed(self.name(), key.as_deref(), self.wrap(op))
            .await
    }

    async fn written(&self, op: RequestOp) -> Result<Timestamp, Error> {
        match self.call(op).await? {
            Reply::Written(ts) => Ok(ts),
            other => Err(self.client.unexpected(other).await),
        }
    }

    async fn value(&self, op: RequestOp) -> Result<Option<Bytes>, Error> {
        match self.call(op).await? {
            Reply::Value(v) => Ok(v),
            other => Err(self.client.unexpected(other).await),
        }
    }

    /// Reads `key`; `None` when absent or deleted.
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Option<Bytes>, Error> {
        self.value(RequestOp::Get {
            key: key.into(),
            consistency,
        })
        .await
    }

    /// Writes `value` under `key`; returns the write's timestamp.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.written(RequestOp::Set {
            key: key.into(),
            value: value.into(),
            consistency,
        })
        .await
    }

    /// Writes `value` under `key`, to expire `ttl` after the write's
    /// timestamp (in the cluster's HLC time: every replica agrees when it
    /// ends); returns the write's timestamp. A `ttl` under a microsecond is
    /// refused, as is one too long to represent.
    pub async fn set_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        let ttl_micros = u64::try_from(ttl.as_micros())
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                Error::Request(RequestError::BadRequest(format!(
                    "TTL {ttl:?} must be at least 1 microsecond and fit in 64 bits of microseconds"
                )))
            })?;
        self.written(RequestOp::SetExpiring {
            key: key.into(),
            value: value.into(),
            ttl_micros,
            consistency,
        })
        .await
    }

    /// Compare-and-set (CRAQ keyspaces only): sets `key` to `new` if and
    /// only if its current value is `expected` (`None`: only if the key is
    /// absent); returns whether it did. Linearizable. On a last-write-wins
    /// keyspace it is refused with [`ClientError::InvalidOp`]; while the
    /// key's chain is reconfiguring (or for a lease period after a node
    /// started) with [`ClientError::ChainChanging`], nothing done: retry.
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expected: Option<&[u8]>,
        new: impl Into<Bytes>,
    ) -> Result<bool, Error> {
        let op = RequestOp::Cas {
            key: key.into(),
            expected: expected.map(Bytes::copy_from_slice),
            new: new.into(),
        };
        match self.call(op).await? {
            Reply::Swapped(s) => Ok(s),
            other => Err(self.client.unexpected(other).await),
        }
    }

    /// Adds `by` (negative: subtracts) to `key`'s value read as a decimal
    /// `i64` (an absent key counts as 0), atomically; returns the new
    /// value. CRAQ keyspaces only: elsewhere, or when the value is not an
    /// integer (or the sum overflows), it is refused with
    /// [`ClientError::InvalidOp`]; [`ClientError::ChainChanging`] means
    /// nothing was done: retry.
    pub async fn incr(&self, key: impl Into<Bytes>, by: i64) -> Result<i64, Error> {
        let op = RequestOp::Incr {
            key: key.into(),
            by,
        };
        match self.call(op).await? {
            Reply::Counter(n) => Ok(n),
            other => Err(self.client.unexpected(other).await),
        }
    }

    /// Deletes `key` (writes a tombstone); returns its timestamp.
    pub async fn del(
        &self,
        key: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.written(RequestOp::Del {
            key: key.into(),
            consistency,
        })
        .await
    }

    /// One page of a scan of this keyspace: up to `limit` keys starting
    /// with `prefix`, in token (hash) order, from `cursor` (a previous
    /// page's, or `None` for the start); returns the entries and the next
    /// page's cursor (`None`: the scan is complete).
    pub async fn scan_page(
        &self,
        prefix: impl Into<Bytes>,
        cursor: Option<Bytes>,
        limit: u32,
        consistency: Option<Consistency>,
    ) -> Result<ScanPage, Error> {
        match self
            .call(RequestOp::Scan {
                prefix: prefix.into(),
                cursor,
                limit,
                consistency,
            })
            .await?
        {
            Reply::Page { entries, next } => Ok((entries, next)),
            other => Err(self.client.unexpected(other).await),
        }
    }

    /// Every live key of this keyspace starting with `prefix` and its
    /// value, in token (hash) order, fetched in pages of `page` entries as
    /// the stream is read. A page that fails ends the stream with its
    /// error; no key present for the whole scan is missed or repeated.
    pub fn scan(
        &self,
        prefix: impl Into<Bytes>,
        page: u32,
        consistency: Option<Consistency>,
    ) -> impl futures_util::Stream<Item = Result<(Bytes, Bytes), Error>> + 'a {
        struct St<'a> {
            handle: KeyspaceHandle<'a>,
            buf: std::collections::VecDeque<(Bytes, Bytes)>,
            cursor: Option<Bytes>,
            done: bool,
        }
        let prefix = prefix.into();
        let start = St {
            handle: self.clone(),
            buf: std::collections::VecDeque::new(),
            cursor: None,
            done: false,
        };
        futures_util::stream::unfold(start, move |mut st| {
            let prefix = prefix.clone();
            async move {
                loop {
                    if let Some(e) = st.buf.pop_front() {
                        return Some((Ok(e), st));
                    }
                    if st.done {
                        return None;
                    }
                    let cursor = st.cursor.take();
                    match st
                        .handle
                        .scan_page(prefix.clone(), cursor, page, consistency)
                        .await
                    {
                        Ok((entries, next)) => {
                            st.buf.extend(entries);
                            st.done = next.is_none();
                            st.cursor = next;
                        }
                        Err(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
            }
        })
    }

    /// Writes `value` in column `column` of row `row` (one cell: last
    /// write wins per cell, so writers of other columns never lose theirs);
    /// returns the write's timestamp.
    pub async fn hset(
        &self,
        row: impl Into<Bytes>,
        column: impl Into<Bytes>,
        value: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.written(RequestOp::HSet {
            row: row.into(),
            column: column.into(),
            value: value.into(),
            consistency,
        })
        .await
    }

    /// Reads column `column` of row `row` (`None`: absent or deleted).
    pub async fn hget(
        &self,
        row: impl Into<Bytes>,
        column: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Option<Bytes>, Error> {
        self.value(RequestOp::HGet {
            row: row.into(),
            column: column.into(),
            consistency,
        })
        .await
    }

    /// Deletes column `column` of row `row`; returns the tombstone's
    /// timestamp.
    pub async fn hdel(
        &self,
        row: impl Into<Bytes>,
        column: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Timestamp, Error> {
        self.written(RequestOp::HDel {
            row: row.into(),
            column: column.into(),
            consistency,
        })
        .await
    }

    /// Row `row`'s live cells, (column, value) in column order (at most
    /// [`crate::proto::MAX_HGETALL`]).
    pub async fn hgetall(
        &self,
        row: impl Into<Bytes>,
        consistency: Option<Consistency>,
    ) -> Result<Vec<(Bytes, Bytes)>, Error> {
        match self
            .call(RequestOp::HGetAll {
                row: row.into(),
                consistency,
            })
            .await?
        {
            Reply::Cells(cells) => Ok(cells),
            other => Err(self.client.unexpected(other).await),
        }
    }
}
