//! What a node does with a message from a peer: decoding the frame,
//! checking the sender, and handing each message to the machine it is for
//! (membership, coordinator, replica, anti-entropy, hints, schema, scans).

use super::*;

impl Node {
    /// Decodes a frame and handles the message in it; a bad frame is
    /// reported as an event and dropped.
    pub fn handle_frame(&mut self, now: impl Into<Now>, frame: &[u8]) {
        match self.codec.decode(frame) {
            Ok(env) => self.handle_envelope(now, env),
            Err(e) => self.out.push_back(Output::Event(NodeEvent::BadFrame(e))),
        }
    }

    /// Handles a decoded frame (a host that decodes frames itself, to
    /// check the sender against its certificate, hands the envelope here):
    /// a newer schema version the sender claims is fetched, then the
    /// message is handled.
    pub fn handle_envelope(&mut self, now: impl Into<Now>, env: Envelope) {
        let now = self.enter(now);
        self.peer_schema_version(now, env.from, env.layout);
        self.handle_peer(now, env.from, env.msg);
        self.settle(now);
        self.leave_input();
    }

    /// Handles a message from peer `from` (one that claims no schema
    /// version; hosts with frames use [`Node::handle_envelope`]).
    pub fn handle_message(&mut self, now: impl Into<Now>, from: NodeId, msg: PeerMsg) {
        let now = self.enter(now);
        self.handle_peer(now, from, msg);
        self.settle(now);
        self.leave_input();
    }

    pub(super) fn handle_peer(&mut self, now: Instant, from: NodeId, msg: PeerMsg) {
        let is_gossip = matches!(msg, PeerMsg::Gossip(_));
        // Gossip is how strangers join; anything else must come from a member.
        if from == self.id || (!is_gossip && !self.membership.is_member(from)) {
            self.out
                .push_back(Output::Event(NodeEvent::UnknownPeer(from)));
            return;
        }
        if !is_gossip {
            self.membership.heard_from(from, now, &mut self.events);
        }
        match msg {
            PeerMsg::Gossip(g) => {
                let sends =
                    self.membership
                        .handle_gossip(from, g, now, &mut self.rng, &mut self.events);
                self.push_gossip(sends);
            }
            PeerMsg::Write { tag, key, version } => {
                if !self.holds(&key, false) {
                    self.out
                        .push_back(Output::Event(NodeEvent::NotOwner { from }));
                    let outcome = crate::wire::WriteOutcome::NotOwner;
                    return self.send(from, PeerMsg::WriteAck { tag, outcome });
                }
                self.replicate(|clock, fx| {
                    replica::on_write(now, from, tag, key, version, clock, fx)
                })
            }
            PeerMsg::Read { tag, key } => {
                if !self.holds(&key, true) {
                    self.out
                        .push_back(Output::Event(NodeEvent::NotOwner { from }));
                    return self.send(
                        from,
                        PeerMsg::ReadReply {
                            tag,
                            result: Err(()),
                        },
                    );
                }
                self.replicate(|_, fx| replica::on_read(from, tag, key, fx))
            }
            PeerMsg::ReadRange {
                tag,
                start,
                end,
                limit,
            } => {
                if !self.holds(&start, true) {
                    self.out
                        .push_back(Output::Event(NodeEvent::NotOwner { from }));
                    return self.send(
                        from,
                        PeerMsg::RangeReply {
                            tag,
                            result: Err(()),
                        },
                    );
                }
                // A replica never sends more than a page, whatever was asked.
                let limit = usize::try_from(limit)
                    .unwrap_or(usize::MAX)
                    .clamp(1, crate::client_api::MAX_ROW_PAGE);
                self.replicate(|_, fx| replica::on_read_range(from, tag, start, end, limit, fx))
            }
            PeerMsg::Repair { key, version } => {
                self.replicate(|clock, fx| replica::on_repair(now, from, key, version, clock, fx))
            }
            PeerMsg::Sync(m) => {
                self.rebuild_placement();
                let wall = self.wall_now(now);
                self.ae.on_message(
                    from,
                    m,
                    now,
                    wall,
                    &self.layout.sync_placement(),
                    &mut self.budget,
                    &mut self.fx,
                );
                self.drain_fx();
            }
            PeerMsg::Hints(m) => {
                let schema = self.schema.schema();
                self.hints.on_message(
                    from,
                    m,
                    &|ks| schema.by_storage_name(ks).is_some(),
                    &mut self.fx,
                );
                self.drain_fx();
            }
            PeerMsg::Schema(m) => self.on_schema_msg(now, from, m),
            PeerMsg::Chain(m) => self.chain_with(now, |c, cx, fx| c.on_message(cx, fx, from, *m)),
            PeerMsg::WriteAck { tag, outcome } => {
                let at = self.wall.0;
                self.coordinate(at, |c, clock, fx| {
                    c.on_write_result(now, tag, from, outcome, clock, fx)
                })
            }
            PeerMsg::ScanRead {
                tag,
                keyspace,
                first,
                last,
                after,
                limit,
            } => self.serve_scan_read(from, tag, keyspace, first, last, after, limit),
            PeerMsg::ScanReply { tag, result } => {
                self.scan_with(now, |s, cx, fx| s.on_chunk(tag, from, result.ok(), cx, fx))
            }
            PeerMsg::ReadReply { tag, result } => {
                let at = self.wall.0;
                self.coordinate(at, |c, clock, fx| {
                    c.on_read_reply(now, tag, from, result, clock, fx)
                })
            }
            PeerMsg::RangeReply { tag, result } => {
                let at = self.wall.0;
                self.coordinate(at, |c, clock, fx| {
                    c.on_range_reply(now, tag, from, result, clock, fx)
                })
            }
        }
    }
}
