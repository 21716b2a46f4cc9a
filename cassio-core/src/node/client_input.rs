//! What a node does with a client's request: checking the keyspace and
//! the node's readiness, then starting a leaderless read or write through
//! the coordinator, or a page of a scan.

use super::*;
use crate::chain::ChainRequest;
use crate::chain_op::ChainOp;

impl Node {
    /// Starts a client request; its answer comes out as `Output::Reply { id, .. }`.
    pub fn handle_client(&mut self, now: impl Into<Now>, id: RequestId, req: ClientRequest) {
        let now = self.enter(now);
        self.client_request(now, id, req);
        self.leave_input();
    }

    pub(super) fn client_request(&mut self, now: Instant, id: RequestId, req: ClientRequest) {
        if self.shutting_down {
            return self.reply(id, Err(ClientError::ShuttingDown));
        }
        self.settle(now);
        if !self.readiness.is_ready() {
            return self.reply(id, Err(ClientError::Joining));
        }
        if self.peer_schema > self.schema.schema().version {
            // The cluster changed its keyspaces or its ring and this node
            // has not fetched the change yet.
            return self.reply(id, Err(ClientError::Joining));
        }
        if self.schema.schema().keyspace(&req.keyspace).is_none() {
            return self.reply(id, Err(ClientError::UnknownKeyspace(req.keyspace)));
        }
        if let Some(e) = self.disagreement(&req.keyspace) {
            return self.reply(id, Err(e));
        }
        if !req.op.is_read() {
            let membership = &self.membership;
            let check = self
                .clock
                .check_own_offset(now, || membership.live_clock_offsets());
            let offset = check.offset_micros;
            if check.changed {
                self.out.push_back(Output::Event(NodeEvent::ClockOffset {
                    offset_micros: offset,
                }));
            }
            if check.off {
                return self.reply(
                    id,
                    Err(ClientError::ClockOffset {
                        offset_ms: offset / 1000,
                        max_ms: self.clock.max_offset() / 1000,
                    }),
                );
            }
        }
        // (Mutation: a node that keeps its own configuration.)
        #[cfg(feature = "mutations")]
        let schema = if self.mutations.skip_config_check {
            &self.seed_schema
        } else {
            self.schema.schema()
        };
        #[cfg(not(feature = "mutations"))]
        let schema = self.schema.schema();
        let Some(ks) = schema.keyspace(&req.keyspace) else {
            return self.reply(id, Err(ClientError::UnknownKeyspace(req.keyspace)));
        };
        let level = req.consistency.unwrap_or(ks.config.default_consistency);
        let replication = ks.config.replication();
        let rf = ks.config.replication_factor;
        let mut needed = level.required(rf);
        if needed > rf {
            return self.reply(id, Err(ClientError::InvalidConsistency { level, rf }));
        }
        if level.per_datacenter() && replication.per_datacenter() {
            let local = self.membership.datacenter_of(self.id);
            if level == Consistency::LocalQuorum && !replication.datacenters.contains_key(local) {
                // This datacenter holds no replica of the keyspace: its
                // factor here is 0, which no level can be met in.
                return self.reply(id, Err(ClientError::InvalidConsistency { level, rf: 0 }));
            }
            // What a scan page (counted over all replicas, not per
            // datacenter) waits for: the sum of the datacenters' quorums,
            // at least a quorum of all replicas.
            needed = replication.datacenters.values().map(|f| f / 2 + 1).sum();
        }
        if ks.config.strategy == ReplicationStrategy::Craq {
            let key = req.op.key();
            let chain_req = match &req.op {
                ClientOp::Get { .. } => ChainRequest::Read {
                    weak: level == Consistency::One,
                },
                ClientOp::Put { value, .. } => ChainRequest::Write(ChainOp::Put(value.clone())),
                ClientOp::Delete { .. } => ChainRequest::Write(ChainOp::Delete),
                ClientOp::Cas { expected, new, .. } => ChainRequest::Write(ChainOp::Cas {
                    expected: expected.clone(),
                    new: new.clone(),
                }),
                ClientOp::Incr { by, .. } => ChainRequest::Write(ChainOp::Incr(*by)),
                _ => {
                    return self.reply(
                        id,
                        Err(ClientError::InvalidOp(
                            "a chain-replicated (craq) keyspace offers get, set, delete, compare-and-set and increments only".into(),
                        )),
                    )
                }
            };
            let skey = storage_key(&ks.storage, key);
            return self.chain_with(now, |c, cx, fx| c.client(cx, fx, id, skey, chain_req));
        }
        if matches!(req.op, ClientOp::Cas { .. } | ClientOp::Incr { .. }) {
            return self.reply(
                id,
                Err(ClientError::InvalidOp(format!(
                    "compare-and-set and increments need a chain-replicated keyspace; {:?} is last-write-wins (create one with --mode craq)",
                    req.keyspace
                ))),
            );
        }
        if let ClientOp::Scan {
            prefix,
            from,
            limit,
        } = &req.op
        {
            let page = PageRequest {
                client: id,
                storage: ks.storage.clone(),
                rf: replication,
                needed,
                prefix: prefix.clone(),
                limit: (*limit).clamp(1, crate::scan::MAX_PAGE),
                from: from.clone(),
            };
            return self.scan_with(now, |s, cx, fx| s.start(page, cx, fx));
        }
        // Built while the keyspace is borrowed, so the storage name is
        // never copied on this path. A cell op's key is the cell's (a row
        // read's: the first key of its slice, `end` in the op).
        let (key, op) = match &req.op {
            ClientOp::Get { key } => (storage_key(&ks.storage, key), Op::Read),
            ClientOp::Put { key, value } => (
                storage_key(&ks.storage, key),
                Op::Write(Some(value.clone())),
            ),
            ClientOp::Delete { key } => (storage_key(&ks.storage, key), Op::Write(None)),
            ClientOp::PutExpiring { key, value, expiry } => (
                storage_key(&ks.storage, key),
                Op::WriteExpiring(value.clone(), *expiry),
            ),
            ClientOp::GetEntry { key } => (storage_key(&ks.storage, key), Op::ReadEntry),
            // Answered above.
            ClientOp::Scan { .. } | ClientOp::Cas { .. } | ClientOp::Incr { .. } => return,
            ClientOp::GetCell { row, column }
            | ClientOp::PutCell { row, column, .. }
            | ClientOp::DeleteCell { row, column } => {
                // (Mutation: one item per row, whatever the column.)
                #[cfg(feature = "mutations")]
                let column = if self.mutations.row_lww {
                    &Key::new()
                } else {
                    column
                };
                let Some(key) = cell_storage_key(&ks.storage, row, column) else {
                    return self.reply(id, Err(ClientError::UnstorableCell));
                };
                let op = match &req.op {
                    ClientOp::PutCell { value, .. } => Op::Write(Some(value.clone())),
                    ClientOp::DeleteCell { .. } => Op::Write(None),
                    _ => Op::Read,
                };
                (key, op)
            }
            ClientOp::ReadRow { row, slice, limit } => {
                let bounds = match slice {
                    RowSlice::All => row_bounds(&ks.storage, row, None, None),
                    RowSlice::Prefix(p) => row_prefix_bounds(&ks.storage, row, p),
                    RowSlice::Range { from, to } => {
                        row_bounds(&ks.storage, row, from.as_deref(), to.as_deref())
                    }
                    RowSlice::After(c) => {
                        let mut next = c.to_vec();
                        // The first column after `c`.
                        next.push(0);
                        row_bounds(&ks.storage, row, Some(&next), None)
                    }
                };
                let Some((start, end)) = bounds else {
                    return self.reply(id, Err(ClientError::UnstorableCell));
                };
                let limit = usize::try_from(*limit)
                    .unwrap_or(usize::MAX)
                    .clamp(1, crate::client_api::MAX_ROW_PAGE);
                (start, Op::ReadRange { end, limit })
            }
        };
        self.start_leaderless(now, id, &req, (key, op), &replication, level)
    }

    pub(super) fn start_leaderless(
        &mut self,
        now: Instant,
        id: RequestId,
        req: &ClientRequest,
        (key, op): (Key, Op),
        replication: &crate::topology::Replication,
        level: Consistency,
    ) {
        self.rebuild_placement();
        let rf = replication.total();
        let needed = level.required(rf);
        // A cell's token is its row's: a row lives on one replica set.
        let token = Token::of(req.op.key());
        let is_read = req.op.is_read();
        // Reads use the current ring; writes reach the replicas of the
        // next ring too while a node leaves (see `transition`).
        #[cfg(feature = "mutations")]
        let current_only = is_read || self.mutations.writes_skip_next_ring;
        #[cfg(not(feature = "mutations"))]
        let current_only = is_read;
        let rings = if current_only {
            vec![self.layout.placement().replicas_for(token, replication)]
        } else {
            self.layout.write_sets_for(token, replication)
        };
        // A `Syncing` replica may lack writes it missed while down: it takes
        // writes but answers no reads until it has caught up. A read of
        // every replica (ALL) may include it: the newest version among all
        // replicas is the newest any of them kept.
        let skip_syncing = is_read && needed < rf;
        let live_of = |all: &[NodeId]| -> Vec<NodeId> {
            all.iter()
                .copied()
                .filter(|&r| self.membership.is_alive(r))
                .filter(|&r| !skip_syncing || !self.membership.is_syncing(r))
                .collect()
        };
        let mut sets: Vec<ReplicaSet> = Vec::new();
        for all in rings {
            if !(level.per_datacenter() && replication.per_datacenter()) {
                let live = live_of(&all);
                sets.push(ReplicaSet {
                    all,
                    live,
                    quorum: None,
                });
                continue;
            }
            // Counted per datacenter: each counted datacenter's replicas
            // are a set needing a quorum of that datacenter's factor.
            let local = self.membership.datacenter_of(self.id).to_string();
            let mut rest = Vec::new();
            for (dc, &factor) in &replication.datacenters {
                let in_dc: Vec<NodeId> = all
                    .iter()
                    .copied()
                    .filter(|&r| self.membership.datacenter_of(r) == dc)
                    .collect();
                #[cfg(feature = "mutations")]
                let counted = level == Consistency::EachQuorum
                    || *dc == local
                    || self.mutations.local_quorum_any_dc;
                #[cfg(not(feature = "mutations"))]
                let counted = level == Consistency::EachQuorum || *dc == local;
                if counted {
                    let live = live_of(&in_dc);
                    sets.push(ReplicaSet {
                        all: in_dc,
                        live,
                        quorum: Some((factor / 2 + 1, factor)),
                    });
                } else {
                    rest.extend(in_dc);
                }
            }
            #[cfg(feature = "mutations")]
            if self.mutations.local_quorum_any_dc && level == Consistency::LocalQuorum {
                // Mutation: the local quorum counted among every replica.
                let all_live = live_of(&all);
                let local_factor = replication.datacenters.get(&local).copied().unwrap_or(0);
                sets.retain(|s| s.quorum.is_none());
                sets.push(ReplicaSet {
                    all: all.clone(),
                    live: all_live,
                    quorum: Some((local_factor / 2 + 1, 0)),
                });
                continue;
            }
            // Writes still go to the other datacenters' replicas (anti-entropy
            // and hints keep them), without waiting for them; a local read
            // asks only its own datacenter.
            if !is_read && !rest.is_empty() {
                let live = live_of(&rest);
                sets.push(ReplicaSet {
                    all: rest,
                    live,
                    quorum: Some((0, 0)),
                });
            }
        }
        let at = self.wall.0;
        self.coordinate(at, |c, clock, fx| {
            c.start(now, id, key, op, sets, needed, rf, clock, fx)
        });
    }

    /// Whether this node's definition of `keyspace` disagrees with most of
    /// the cluster's token owners that gossip one; the error says how, and
    /// the first such verdict of a view is also reported as an event.
    pub(super) fn disagreement(&mut self, keyspace: &str) -> Option<ClientError> {
        #[cfg(feature = "mutations")]
        if self.mutations.skip_config_check {
            return None;
        }
        if self.schema.schema().version > 0 {
            // The cluster agreed on its keyspaces: each node's own
            // configuration no longer matters.
            return None;
        }
        let own = self.schema.schema().keyspace(keyspace).map(|k| &k.config);
        let (verdict, event) = self.agreement.check(&self.membership, keyspace, own);
        if let Some(e) = event {
            self.out.push_back(Output::Event(e));
        }
        verdict
    }

    /// Runs `f` on the scans with this node's view of the ring, then
    /// carries out what it asked for, in order.
    pub(super) fn scan_with(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut Scans, &mut ScanCtx<'_>, &mut Vec<ScanEffect>),
    ) {
        self.rebuild_placement();
        let hlc_micros = self.with_clock(|_, clock| clock.hlc_micros(now));
        let mut fx = Vec::new();
        {
            let layout = &self.layout;
            let membership = &self.membership;
            let coord = &mut self.coord;
            let mut range =
                |token: Token, rf: &crate::topology::Replication, skip_syncing: bool| {
                    let placement = layout.placement();
                    let last = placement.range_last(token)?;
                    let live = placement
                        .replicas_for(token, rf)
                        .into_iter()
                        .filter(|&r| membership.is_alive(r))
                        .filter(|&r| !skip_syncing || !membership.is_syncing(r))
                        .collect();
                    Some(RangeView { last, live })
                };
            let mut tag = || coord.new_tag();
            let mut cx = ScanCtx {
                me: self.id,
                now,
                hlc_micros,
                timeout: self.request_timeout,
                range: &mut range,
                tag: &mut tag,
            };
            f(&mut self.scans, &mut cx, &mut fx);
        }
        for e in fx {
            match e {
                ScanEffect::Reply(id, result) => self.reply(id, result),
                ScanEffect::Send(to, msg) => self.send(to, msg),
                ScanEffect::Storage(op, w) => self.storage(op, Waiter::Scan(w)),
            }
        }
    }

    /// Coordinator `from` asks for this node's entries of a token range
    /// (a scan's read). A range this node does not hold whole on its
    /// current ring is refused, as a read of a key it does not hold is.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve_scan_read(
        &mut self,
        from: NodeId,
        tag: crate::wire::RequestTag,
        keyspace: String,
        first: Token,
        last: Token,
        after: Option<Key>,
        limit: u32,
    ) {
        let replication = self
            .schema
            .schema()
            .by_storage_name(&keyspace)
            .map(|k| k.config.replication());
        self.rebuild_placement();
        let placement = self.layout.placement();
        let holds = replication.is_some_and(|r| {
            first <= last
                && placement.replicas_for(first, &r).contains(&self.id)
                && placement.range_last(first).is_some_and(|l| l >= last)
        });
        let cursor = crate::scan::ScanCursor {
            token: first,
            after,
        };
        if !holds || cursor.validate().is_err() {
            self.out
                .push_back(Output::Event(NodeEvent::NotOwner { from }));
            return self.send(
                from,
                PeerMsg::ScanReply {
                    tag,
                    result: Err(()),
                },
            );
        }
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .clamp(1, crate::scan::MAX_PAGE);
        let op = crate::scan::range_op(&keyspace, &cursor, last, limit);
        self.storage(
            op,
            Waiter::Scan(ScanWaiter::Replica {
                to: from,
                tag,
                limit,
            }),
        );
    }
}
