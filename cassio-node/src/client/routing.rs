//! Token-aware routing ([`super::ClientConfig::token_aware`]): the client
//! holds the cluster's layout ([`crate::cluster_layout`]) and sends each
//! data request straight to a replica of its key, so the coordinator is a
//! replica (one network hop less, and with RF 1 no forwarding at all).
//!
//! - The layout is fetched at connect and again at the first request after
//!   [`super::ClientConfig::layout_refresh`] has passed, and at once after a
//!   routed request failed for a reason a newer layout may cure (the node
//!   is unreachable, stopping, overloaded, joining, or does not know the
//!   keyspace). A refresh goes through the plain path (any node); while it
//!   runs, other requests use the layout held.
//! - One connection per node, opened on first use, at most
//!   [`super::ClientConfig::max_node_connections`] nodes; past that, the
//!   plain path.
//! - The target is the first replica in placement order that is `Normal`,
//!   up in the answering node's view, not failed since the last refresh,
//!   and advertises a routable client address (a node bound on a wildcard
//!   address advertises it as is, and is not routed to); one in
//!   [`super::ClientConfig::datacenter`] first when set.
//! - Any routed failure falls back to the plain path (the current node,
//!   then the next ones), so routing never fails a request the plain
//!   client would have served. Errors the cluster reports that another
//!   coordinator would report alike (`Unavailable`, `Timeout`, a bad
//!   request...) are returned as the plain client returns them.

use super::{Client, Error, Failover, State};
use crate::cluster_layout::{ClusterLayout, Routes};
use crate::handle::RequestError;
use crate::proto::{Reply, RequestOp};
use cassio_core::ClientError;
use core::net::SocketAddr;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The layout a token-aware client holds.
struct Held {
    layout: ClusterLayout,
    routes: Routes,
}

/// How soon after the last layout request a stale layout (a routed
/// request failed) is asked for again: bounds the refreshes a client makes
/// while a node is down.
const STALE_REFRESH_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// A token-aware client's routing state.
#[derive(Default)]
pub(super) struct Router {
    held: Mutex<Option<Arc<Held>>>,
    /// One connection per node (by client address), opened on first use.
    nodes: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<State>>>>,
    /// Nodes a routed request failed on, and when: avoided for a refresh
    /// interval (the layout may still call them up: failure detection
    /// takes seconds).
    failed: Mutex<Vec<(u64, Instant)>>,
    /// When a layout was last asked for (fetched or not).
    last_attempt: Mutex<Option<Instant>>,
    /// A refresh is due at the next request, whatever the interval.
    stale: AtomicBool,
    /// A refresh is running (others keep the layout held meanwhile).
    refreshing: AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    routed: AtomicU64,
    fallbacks: AtomicU64,
    refreshes: AtomicU64,
    changes: AtomicU64,
}

/// What a token-aware client did so far ([`Client::routing_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingStats {
    /// The layout version held ([`ClusterLayout::version`]); `None` before
    /// the first layout was fetched (or with routing off).
    pub layout_version: Option<u64>,
    /// How many times the layout fetched differed from the one held (the
    /// first fetch counts): grows whenever the cluster's layout changed.
    pub layout_changes: u64,
    /// Layouts fetched.
    pub refreshes: u64,
    /// Requests answered by the replica they were routed to.
    pub routed: u64,
    /// Requests that took the plain path (no layout, no usable replica,
    /// or the routed attempt failed).
    pub fallbacks: u64,
    /// Members in the layout held.
    pub members: usize,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

/// Whether a routed answer is worth the plain path (and a new layout):
/// the plain client moves to another node on these too.
fn retry_elsewhere(e: &RequestError) -> bool {
    matches!(
        e,
        RequestError::NotRunning
            | RequestError::Client(
                ClientError::ShuttingDown
                    | ClientError::Overloaded
                    | ClientError::Joining
                    | ClientError::ClockOffset { .. }
                    | ClientError::ConfigMismatch { .. }
                    | ClientError::UnknownKeyspace(_)
            )
    )
}

impl Client {
    /// Sends data operation `op` (already wrapped for its keyspace) to a
    /// replica of `key` in `keyspace` when routing is on and the layout
    /// names one; otherwise, or if that fails, by the plain path.
    pub(super) async fn call_routed(
        &self,
        keyspace: &str,
        key: Option<&[u8]>,
        op: RequestOp,
    ) -> Result<Reply, Error> {
        let (Some(router), Some(key)) = (&self.router, key) else {
            return self.call(op).await;
        };
        self.refresh_if_due(router).await;
        let held = router.held.lock().clone();
        let target = held.as_ref().and_then(|h| {
            let avoid = router.avoided(self.config.layout_refresh);
            h.routes
                .target(keyspace, key, self.config.datacenter.as_deref(), &avoid)
        });
        if let Some((node, addr)) = target {
            if let Some(slot) = router.slot(addr, self.config.max_node_connections) {
                let mut st = slot.lock().await;
                let id = st.next_id;
                st.next_id += 1;
                match self
                    .attempt(&mut st, addr, id, op.clone(), self.config.request_timeout)
                    .await
                {
                    Ok(Ok(reply)) => {
                        router.counters.routed.fetch_add(1, Ordering::Relaxed);
                        return Ok(reply);
                    }
                    Ok(Err(e)) if !retry_elsewhere(&e) => return Err(Error::Request(e)),
                    Ok(Err(e)) => {
                        tracing::debug!(%node, %addr, error = %e, "routed request refused: plain path");
                        st.conn = None;
                        router.failed(node);
                    }
                    Err(Failover(reason)) => {
                        tracing::debug!(%node, %addr, %reason, "routed request failed: plain path");
                        st.conn = None;
                        router.failed(node);
                    }
                }
            }
        }
        router.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.call(op).await
    }

    /// Fetches the layout if it is due (interval passed, or marked stale)
    /// and no other request is fetching it.
    async fn refresh_if_due(&self, router: &Router) {
        let since = router.last_attempt.lock().map(|t| t.elapsed());
        let due = match since {
            None => true,
            Some(since) => {
                since >= self.config.layout_refresh
                    || (router.stale.load(Ordering::Relaxed) && since >= STALE_REFRESH_GAP)
            }
        };
        if due && !router.refreshing.swap(true, Ordering::AcqRel) {
            *router.last_attempt.lock() = Some(Instant::now());
            if let Err(e) = self.refresh_layout().await {
                tracing::debug!(error = %e, "layout refresh failed: the layout held stays");
            }
            router.refreshing.store(false, Ordering::Release);
        }
    }

    /// Fetches the cluster's layout now (through the plain path) and routes
    /// by it; returns its version. With routing off it only fetches.
    pub async fn refresh_layout(&self) -> Result<u64, Error> {
        let layout = self.layout().await?;
        let version = layout.version;
        if let Some(router) = &self.router {
            *router.last_attempt.lock() = Some(Instant::now());
            router.counters.refreshes.fetch_add(1, Ordering::Relaxed);
            let mut held = router.held.lock();
            if held.as_ref().is_none_or(|h| h.layout.version != version) {
                router.counters.changes.fetch_add(1, Ordering::Relaxed);
            }
            *held = Some(Arc::new(Held {
                routes: layout.routes(),
                layout,
            }));
            router.stale.store(false, Ordering::Relaxed);
        }
        Ok(version)
    }

    /// The cluster's layout as the node the client talks to sees it.
    pub async fn layout(&self) -> Result<ClusterLayout, Error> {
        match self.call(RequestOp::Layout).await? {
            Reply::Layout(l) => Ok(*l),
            other => Err(self.unexpected(other).await),
        }
    }

    /// What token-aware routing did so far (all zero with routing off).
    pub fn routing_stats(&self) -> RoutingStats {
        let Some(r) = &self.router else {
            return RoutingStats::default();
        };
        let held = r.held.lock();
        RoutingStats {
            layout_version: held.as_ref().map(|h| h.layout.version),
            layout_changes: r.counters.changes.load(Ordering::Relaxed),
            refreshes: r.counters.refreshes.load(Ordering::Relaxed),
            routed: r.counters.routed.load(Ordering::Relaxed),
            fallbacks: r.counters.fallbacks.load(Ordering::Relaxed),
            members: held.as_ref().map_or(0, |h| h.layout.members.len()),
        }
    }

    /// The replicas of `key` in `keyspace` by the layout held, in placement
    /// order (`None`: routing off, no layout yet, or an unknown keyspace).
    pub fn replicas_of(&self, keyspace: &str, key: &[u8]) -> Option<Vec<u64>> {
        let held = self.router.as_ref()?.held.lock().clone()?;
        held.routes.replicas(keyspace, key)
    }
}

impl Router {
    /// The connection slot of the node at `addr`; `None` when `max` nodes
    /// have one already.
    fn slot(&self, addr: SocketAddr, max: usize) -> Option<Arc<tokio::sync::Mutex<State>>> {
        let mut nodes = self.nodes.lock();
        if let Some(s) = nodes.get(&addr) {
            return Some(s.clone());
        }
        if nodes.len() >= max {
            return None;
        }
        let s = Arc::new(tokio::sync::Mutex::new(State {
            conn: None,
            current: 0,
            next_id: 1,
        }));
        nodes.insert(addr, s.clone());
        Some(s)
    }

    /// Node `id` failed a routed request: route around it and fetch a new
    /// layout at the next request.
    fn failed(&self, id: u64) {
        let mut failed = self.failed.lock();
        failed.retain(|(n, _)| *n != id);
        failed.push((id, Instant::now()));
        self.stale.store(true, Ordering::Relaxed);
    }

    /// The nodes to route around: those that failed within `window`.
    fn avoided(&self, window: std::time::Duration) -> Vec<u64> {
        let mut failed = self.failed.lock();
        failed.retain(|(_, at)| at.elapsed() < window);
        failed.iter().map(|(n, _)| *n).collect()
    }
}
