//! Caps on what clients may make a node hold: open connections per client
//! port, bytes of unanswered input per connection and across connections,
//! keys per multi-key command.
//!
//! Each cap answers with an error that names it (and the setting that
//! raises it) instead of letting memory grow: a node that runs out of
//! memory loses every client, not only the greedy one.
//!
//! Metrics:
//! - `cassio_gateway_connections_refused_total{protocol}`: connections
//!   refused because the port had `max_connections` open;
//! - `cassio_gateway_buffer_limit_closes_total{protocol, limit}`: connections
//!   closed for holding too much input (`limit` is `connection` or `total`);
//! - `cassio_gateway_key_limit_refusals_total{protocol}`: commands refused
//!   for naming more than `max_keys_per_command` keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections each client port accepts by default (Redis' `maxclients`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Unanswered input one connection may hold by default (Redis'
/// `client-query-buffer-limit`).
pub const DEFAULT_MAX_QUERY_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Unanswered input all connections of a port may hold together by default.
pub const DEFAULT_MAX_TOTAL_QUERY_BUFFER_BYTES: usize = 1024 * 1024 * 1024;
/// Keys one multi-key command (`MGET`, `MSET`, `DEL`, `EXISTS`) may name by
/// default.
pub const DEFAULT_MAX_KEYS_PER_COMMAND: usize = 10_000;

/// How long a client connection may stay silent by default before it is
/// closed (Redis' `timeout` is off by default; a bound keeps forgotten
/// connections from holding slots forever).
pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));

/// The gateways' caps; see the module docs. Every count is at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Open connections per client port; past it a new connection is told
    /// so and closed.
    pub max_connections: usize,
    /// Bytes of input one connection may hold unanswered (a command being
    /// received, pipelined commands being run); past it the connection is
    /// closed with an error.
    pub max_query_buffer_bytes: usize,
    /// The same, summed over every connection of one port.
    pub max_total_query_buffer_bytes: usize,
    /// Keys one multi-key command may name.
    pub max_keys_per_command: usize,
    /// How long a connection may send nothing before it is closed (RESP:
    /// told `-ERR idle timeout ...` first); `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_query_buffer_bytes: DEFAULT_MAX_QUERY_BUFFER_BYTES,
            max_total_query_buffer_bytes: DEFAULT_MAX_TOTAL_QUERY_BUFFER_BYTES,
            max_keys_per_command: DEFAULT_MAX_KEYS_PER_COMMAND,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Refused connections answered at the same time per port; past it a
/// refused connection is closed after a best-effort write, so a flood of
/// connections cannot make refusing them cost unbounded tasks.
const MAX_REFUSALS: usize = 64;

/// How long a refused connection is given to read its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The open-connection slots of one port.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSlots {
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    max: usize,
}

impl ConnectionSlots {
    /// `max` slots (at least one; tokio caps a semaphore far above any
    /// descriptor limit).
    pub(crate) fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionSlots {
            slots: Arc::new(Semaphore::new(max)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            max,
        }
    }

    /// Leave to spend a task on answering one refused connection; `None`
    /// when [`MAX_REFUSALS`] are being answered already (close it then).
    pub(crate) fn refusal(&self) -> Option<OwnedSemaphorePermit> {
        self.refusals.clone().try_acquire_owned().ok()
    }

    /// Answers a connection refused by [`ConnectionSlots::admit`] with
    /// `reply`, then closes it.
    pub(crate) fn refuse(&self, sock: TcpStream, reply: &'static [u8]) {
        match self.refusal() {
            Some(permit) => {
                tokio::spawn(async move {
                    write_and_linger(sock, reply).await;
                    drop(permit);
                });
            }
            // A fresh socket's send buffer takes a short reply at once.
            None => {
                let _ = sock.try_write(reply);
            }
        }
    }

    /// A slot for a new connection, held until it closes; `None` when every
    /// slot is taken (and the refusal is counted).
    pub(crate) fn admit(&self, protocol: &'static str) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::counter!("cassio_gateway_connections_refused_total", "protocol" => protocol)
                    .increment(1);
                tracing::warn!(
                    protocol,
                    max_connections = self.max,
                    "connection refused: max_connections reached"
                );
                None
            }
        }
    }
}

/// Writes `reply` and closes without losing it: closing a socket with
/// unread input makes the kernel send a reset, which can discard the reply
/// before the client reads it. So: send FIN, then discard input until the
/// client closes, within bounds of time and bytes.
pub(crate) async fn write_and_linger<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, reply: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, sock.write_all(reply)).await;
    linger(&mut sock).await;
}

/// Half-closes `sock` and discards what the client still sends, for at
/// most a second and a mebibyte, so an answer already written arrives.
pub(crate) async fn linger<S: AsyncRead + AsyncWrite + Unpin>(sock: &mut S) {
    let _ = sock.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut left: usize = 1024 * 1024;
    let drain = async {
        while left > 0 {
            match sock.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

/// Bytes of input held by every connection of a port.
#[derive(Clone, Debug)]
pub(crate) struct BufferBudget {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl BufferBudget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        BufferBudget {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// One connection's share, released when dropped.
    pub(crate) fn share(&self) -> BufferShare {
        BufferShare {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes held now by all shares.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What one connection holds of a [`BufferBudget`].
#[derive(Debug)]
pub(crate) struct BufferShare {
    budget: BufferBudget,
    held: usize,
}

impl BufferShare {
    /// Records that the connection now holds `bytes`; false when the total
    /// over every connection is then above the budget's cap.
    pub(crate) fn set(&mut self, bytes: usize) -> bool {
        let total = if bytes >= self.held {
            let grow = bytes - self.held;
            self.budget
                .used
                .fetch_add(grow, Ordering::Relaxed)
                .saturating_add(grow)
        } else {
            let shrink = self.held - bytes;
            self.budget
                .used
                .fetch_sub(shrink, Ordering::Relaxed)
                .saturating_sub(shrink)
        };
        self.held = bytes;
        total <= self.budget.max
    }
}

impl Drop for BufferShare {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_past_the_cap_and_come_back_when_released() {
        let s = ConnectionSlots::new(2);
        let a = s.admit("test");
        let b = s.admit("test");
        assert!(a.is_some() && b.is_some());
        assert!(s.admit("test").is_none());
        drop(a);
        assert!(s.admit("test").is_some());
    }

    #[test]
    fn shares_sum_and_release_on_drop() {
        let budget = BufferBudget::new(100);
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.set(60));
        assert!(!b.set(50), "110 bytes held over a cap of 100");
        assert_eq!(budget.used(), 110);
        assert!(b.set(40));
        assert!(a.set(10));
        assert_eq!(budget.used(), 50);
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
