//! What the background machines (anti-entropy, hinted handoff) ask the node
//! to do: messages to send and storage operations to run, each storage
//! operation with the [`BgWaiter`] its completion is routed back to.

use crate::hint_log::Hint;
use crate::output::NodeEvent;
use crate::storage_ops::StorageOp;
use crate::types::{Key, NodeId, Versioned};
use crate::wire::PeerMsg;

/// Who waits for a background storage operation, and with what context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BgWaiter {
    /// A page of the tree rebuild scan of `keyspace`, generation `run`.
    RebuildPage { keyspace: String, run: u64 },
    /// Our own digests for the current window of exchange `xid`.
    OwnDigests { xid: u64 },
    /// Our items (of `keys`) to push in exchange `xid`, with the keys to pull.
    PushItems {
        xid: u64,
        keys: Vec<Key>,
        pull: Vec<Key>,
    },
    /// Items from a peer (sync or hints) being applied; `then` says who to
    /// answer once they are.
    ApplyItems {
        items: Vec<(Key, Versioned)>,
        then: AfterApply,
    },
    /// A responder's digest scan for `xid`, asked by `to`.
    AnswerKeys {
        to: NodeId,
        xid: u64,
        limit: usize,
        segments: Vec<u16>,
    },
    /// A responder's read of the `keys` `to` pulls in exchange `xid`.
    AnswerPull {
        to: NodeId,
        xid: u64,
        keys: Vec<Key>,
    },
    /// A hint was appended for `target` (its charge in bytes).
    HintAppended {
        target: NodeId,
        charge: u64,
        created: u64,
    },
    /// A batch of `target`'s hints was read for delivery.
    HintsRead { target: NodeId },
    /// `target`'s hints were trimmed or dropped.
    HintsTrimmed,
    /// The backlog of every target, read at start.
    HintBacklog,
    /// The store took a new purge watermark.
    Watermark,
}

/// What to do once items from a peer are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AfterApply {
    /// Nothing (items pulled by our own exchange).
    Nothing,
    /// Answer a sync push with the pulled items (read after applying).
    SyncPush {
        to: NodeId,
        xid: u64,
        pull: Vec<Key>,
    },
    /// Acknowledge a hint batch.
    HintBatch { to: NodeId, tag: u64 },
}

/// Work requested by a background machine, drained by the node.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub sends: Vec<(NodeId, PeerMsg)>,
    pub storage: Vec<(StorageOp, BgWaiter)>,
    pub events: Vec<NodeEvent>,
}

impl Effects {
    pub fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.sends.push((to, msg));
    }

    pub fn storage(&mut self, op: StorageOp, waiter: BgWaiter) {
        self.storage.push((op, waiter));
    }

    pub fn event(&mut self, e: NodeEvent) {
        self.events.push(e);
    }

    /// Appends a hint for `target`.
    pub fn append_hint(&mut self, target: NodeId, hint: Hint) {
        let charge = hint.charge();
        let created = hint.created_micros;
        self.storage(
            StorageOp::HintAppend { target, hint },
            BgWaiter::HintAppended {
                target,
                charge,
                created,
            },
        );
    }
}
