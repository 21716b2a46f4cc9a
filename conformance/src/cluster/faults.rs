//! The faults the nemesis injects, at points in virtual time.

use std::time::Duration;

/// A fault injected at a point in virtual time. Nodes are indices `0..nodes`.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Frames from any node in `from` to any node in `to` are dropped; both
    /// directions unless `one_way`. Cuts accumulate until [`Fault::Heal`],
    /// so two partitions make a non-transitive network (a bridge node that
    /// sees both sides, which do not see each other).
    Partition {
        /// One side.
        from: Vec<usize>,
        /// The other side.
        to: Vec<usize>,
        /// Only `from → to` is cut.
        one_way: bool,
    },
    /// Every partition is removed.
    Heal,
    /// The node's process dies: its in-memory state and in-flight storage
    /// operations are lost; its store keeps what the store model says
    /// survives a crash (everything for `MemStore`, only synced state for
    /// [`super::stores::SimStores`]); its persisted node state is kept.
    Crash(usize),
    /// The node starts again on the store that survived, with a new
    /// generation (no effect on a running node).
    Restart(usize),
    /// The node crashes and its data directory is wiped (store and persisted
    /// node state); it restarts at the same address with the same id, or
    /// with a new one when `new_id` (a replacement), on [`Fault::Restart`].
    Wipe {
        /// The node.
        node: usize,
        /// Whether it comes back under a new id.
        new_id: bool,
    },
    /// Changes the loss probability.
    SetLoss(f64),
    /// The node's wall clock jumps by this many microseconds (negative: back).
    ClockJump {
        /// The node.
        node: usize,
        /// The jump, in microseconds.
        micros: i64,
    },
    /// Every node's wall clock is corrected (as NTP would): skews, offsets
    /// and jumps end. The simulator does this when faults stop.
    SyncClocks,
    /// The node's store fails this fraction of applies and gets (0 stops it).
    StorageErrors {
        /// The node.
        node: usize,
        /// Probability that a storage operation fails.
        rate: f64,
    },
    /// The node's storage operations complete only after this long.
    StorageStall {
        /// The node.
        node: usize,
        /// How long the disk hangs.
        duration: Duration,
    },
    /// The node's process handles no input for this long (a GC pause, a
    /// stopped VM): deliveries, timers, storage completions and client
    /// requests queue up and arrive afterwards, to its old state.
    Pause {
        /// The node.
        node: usize,
        /// How long it is paused.
        duration: Duration,
    },
    /// The node (one of [`super::Scenario::join_later`]) joins the running
    /// cluster for the first time.
    Join(usize),
    /// The node leaves the cluster for good (announces it, then stops).
    Leave(usize),
    /// An operator asks node `by` to take dead node `dead` off the ring
    /// (`cassio remove`); `dead` never comes back.
    RemoveDead {
        /// The node the operator asks.
        by: usize,
        /// The dead node.
        dead: usize,
    },
    /// An operator asks node `by` for a keyspace change (`cassio
    /// keyspace ...`); retried a second later while `by` is not ready.
    SchemaChange {
        /// The node the operator asks.
        by: usize,
        /// The change.
        change: cassio_core::schema::SchemaChange,
    },
}
