//! The node's side of the schema: operator changes, the claimant that
//! founds the schema and keeps its voters current, fetching a newer version
//! a peer knows, and applying each chosen version (see
//! [`crate::schema_agreement`]).

use super::*;
use crate::agreed_ring::AgreedRing;
use crate::schema::{Schema, SchemaChange};
use crate::schema_agreement::{AgreementOutput, AgreementView, SchemaMsg};
use std::collections::BTreeSet;

/// How often a node behind a peer's schema asks for the newer one.
const FETCH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

impl Node {
    /// The newest schema version this node knows: its keyspaces and voters.
    pub fn schema(&self) -> &Schema {
        self.schema.schema()
    }

    /// Asks the cluster for a schema change; the answer comes out as
    /// `Output::Reply { id, .. }`: `ClientResponse::SchemaChanged` once a
    /// version holding it is chosen, or `ClientError::Schema`.
    pub fn change_schema(&mut self, now: impl Into<Now>, id: RequestId, change: SchemaChange) {
        let now = self.enter(now);
        if self.shutting_down {
            self.reply(id, Err(ClientError::ShuttingDown));
        } else if !self.readiness.is_ready() {
            self.reply(id, Err(ClientError::Joining));
        } else if let Some(e) = self.founding_refusal() {
            self.reply(id, Err(e));
        } else {
            let view = self.agreement_view();
            self.run_schema(now, |a| a.propose(now, change, Some(id), &view));
        }
        self.leave_input();
    }

    /// Every message says which schema version its sender knows; a newer
    /// one is fetched (at most every [`FETCH_EVERY`]).
    pub(super) fn peer_schema_version(&mut self, now: Instant, from: NodeId, version: u64) {
        // Only members count: toward `settle_schema` (the map stays
        // bounded by the membership), and as a newer version that stops
        // this node coordinating until fetched. A stranger's claim could
        // not be fetched from it, and would stall the node for nothing.
        if !self.membership.is_member(from) {
            return;
        }
        let seen = self.schema_seen.entry(from).or_insert(0);
        *seen = (*seen).max(version);
        if version <= self.schema.schema().version {
            return;
        }
        self.peer_schema = self.peer_schema.max(version);
        if self
            .schema_fetched
            .is_some_and(|at| now.saturating_duration_since(at) < FETCH_EVERY)
        {
            return;
        }
        self.schema_fetched = Some(now);
        let view = self.agreement_view();
        self.run_schema(now, |a| a.peer_version(now, from, version, &view));
    }

    pub(super) fn on_schema_msg(&mut self, now: Instant, from: NodeId, m: SchemaMsg) {
        let view = self.agreement_view();
        self.run_schema(now, |a| a.on_message(now, from, m, &view));
    }

    /// The claimant's duties and the agreement's timers. The claimant is
    /// the lowest live `Normal` token owner: it founds the schema (the
    /// first version) once its view has settled and holds every seed,
    /// proposes the ring its gossip shows whenever it differs from the
    /// agreed one (see [`crate::agreed_ring`]), and new voters when the
    /// token owners changed and no ring move runs. Runs on every timer, so an idle agreement and a
    /// node that cannot claim cost no walk over the members.
    pub(super) fn schema_tick(&mut self, now: Instant) {
        let may_claim = self.readiness.is_ready()
            && !self.shutting_down
            && self.membership.status() == NodeStatus::Normal
            && !self.schema.busy();
        if may_claim {
            self.claim(now);
        }
        if self.schema.busy() {
            let view = self.agreement_view();
            self.run_schema(now, |a| a.tick(now, &view));
        }
    }

    /// Whether this node is the claimant: the lowest live `Normal` token
    /// owner (before the first version, among those whose configured
    /// keyspaces are this node's).
    pub(super) fn is_claimant(&self) -> bool {
        // Before the first version, the claimant is the lowest live node
        // whose configured keyspaces are this node's (a node configured
        // otherwise may not found, see `founding_refusal`, so it must not
        // hold the others back).
        let founding = self.schema.schema().version == 0;
        let own_keyspaces = self
            .membership
            .state_of(self.id)
            .map(|(_, app)| app.keyspaces.clone())
            .unwrap_or_default();
        let owners = self.membership.token_owner_ids();
        let lowest_live = owners
            .iter()
            .copied()
            .filter(|&id| id == self.id || self.membership.is_alive(id))
            .find(|&id| {
                self.membership.state_of(id).is_some_and(|(_, app)| {
                    app.status == NodeStatus::Normal
                        && (!founding || app.keyspaces == own_keyspaces)
                })
            });
        lowest_live == Some(self.id)
    }

    /// The claimant's proposal, if this node is the claimant and one is due.
    fn claim(&mut self, now: Instant) {
        let founding = self.schema.schema().version == 0;
        if !self.is_claimant() || (founding && self.founding_refusal().is_some()) {
            return;
        }
        let view = self.agreement_view();
        let current = self.schema.schema();
        // The ring as this node's gossip has it: nodes that asked to join,
        // leave or be removed. Keys are placed by the agreed ring only, so
        // a request reaches the cluster's placement through this proposal.
        let mut ring = AgreedRing::from_gossip(&self.membership);
        if current.has_craq() {
            if let Some(agreed) = &current.ring {
                // A current owner back on an empty data directory under its
                // old id gossips `Joining`: it stays a current owner (its
                // chains leave it out until it rejoins them syncing),
                // rather than leave its keys' chains to nodes that never
                // held them at once.
                for (id, m) in ring.members.iter_mut() {
                    if !m.now && m.next && agreed.owns(*id).0 {
                        m.now = true;
                    }
                }
            }
        }
        let voters = if founding {
            if view.founders.is_empty() {
                return;
            }
            view.founders.clone()
        } else {
            let owners: BTreeSet<NodeId> = ring
                .owners_now()
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| !self.membership.removal_requested(*id))
                .collect();
            // Voters change only between moves, so the voters of a move's
            // versions are its owners before it.
            if !ring.is_moving() && !owners.is_empty() {
                owners
            } else {
                current.voters.clone()
            }
        };
        if founding || current.ring.as_ref() != Some(&ring) || voters != current.voters {
            self.run_schema(now, |a| {
                let base = a.schema().version;
                a.propose(now, SchemaChange::Claim { base, voters, ring }, None, &view)
            });
        }
    }

    /// Why this node may not found the schema: its configured keyspaces
    /// disagree with what most token owners gossip (a node started with
    /// another `--replication-factor` must not give the whole cluster its
    /// setting). `None` once a version exists, or when they agree.
    fn founding_refusal(&mut self) -> Option<ClientError> {
        if self.schema.schema().version > 0 {
            return None;
        }
        let names: Vec<String> = self.schema.schema().keyspaces.keys().cloned().collect();
        names.into_iter().find_map(|name| self.disagreement(&name))
    }

    /// When the agreement next needs a timer.
    pub(super) fn schema_deadline(&self) -> Option<Instant> {
        self.schema.next_deadline()
    }

    /// Who founds the first version: every `Normal` or `Syncing` token
    /// owner this node knows, alive or not (one that took its tokens at
    /// once when the cluster started must know it founded: see
    /// `ChainMachine::founded`), once most seeds are among them and every other
    /// seed is gone without tokens (none before). Any two nodes that could
    /// found share a founding seed (a cluster's nodes share a seed list)
    /// and need every founder's acceptance, so their rounds meet at an
    /// acceptor and cannot choose two first versions; and a node cut off
    /// from part of the cluster still names it, so it waits rather than
    /// founds alone.
    pub(super) fn agreement_view(&self) -> AgreementView {
        let founders: BTreeSet<NodeId> = self
            .membership
            .token_owner_ids()
            .into_iter()
            .filter(|&id| {
                self.membership.state_of(id).is_some_and(|(_, app)| {
                    matches!(app.status, NodeStatus::Normal | NodeStatus::Syncing)
                })
            })
            .collect();
        let founder = |addr: &core::net::SocketAddr| {
            founders
                .iter()
                .any(|&id| self.membership.addr_of(id) == Some(*addr))
        };
        // Every seed must be a founder, except one gone without tokens
        // (it died joining, or was removed) before the first version, and
        // most seeds must be: two founding rounds on one seed list still
        // share a founder. (Chains serve only under a chosen version: a
        // seed that died in a cluster's first seconds must not leave its
        // CRAQ keyspaces unavailable for good.)
        let present = self.seeds.iter().filter(|a| founder(a)).count();
        let seeds_in = self.seeds.is_empty()
            || (present * 2 > self.seeds.len()
                && self
                    .seeds
                    .iter()
                    .all(|a| founder(a) || self.membership.gone_without_tokens(*a)));
        // (Mutation: factor changes that do not wait for their repair.)
        #[cfg(feature = "mutations")]
        let repaired = if self.mutations.skip_rf_repair_gate {
            u64::MAX
        } else {
            self.membership.min_repaired_schema()
        };
        #[cfg(not(feature = "mutations"))]
        let repaired = self.membership.min_repaired_schema();
        AgreementView {
            founders: if seeds_in { founders } else { BTreeSet::new() },
            repaired,
        }
    }

    /// Tells anti-entropy the newest schema version that every token owner
    /// has adopted (its messages carry it) for at least a request's
    /// lifetime, so no write coordinated under an older version is still
    /// in flight: a full round that begins then repairs every replica set
    /// of that version. A down owner holds the version back until it is
    /// heard from again.
    pub(super) fn settle_schema(&mut self, now: Instant) {
        let mine = self.schema.schema().version;
        // Runs on every timer: walks the owners without collecting them.
        let adopted = self
            .membership
            .token_owner_iter()
            .map(|id| {
                if id == self.id {
                    mine
                } else {
                    self.schema_seen.get(&id).copied().unwrap_or(0)
                }
            })
            .min()
            .unwrap_or(mine);
        if self.schema_adopted.back().is_none_or(|&(_, v)| adopted > v) {
            self.schema_adopted.push_back((now, adopted));
        }
        let settled_at = |at: Instant| at + self.request_timeout <= now;
        // Keep the newest entry that settled and those after it.
        while self.schema_adopted.len() > 1
            && self
                .schema_adopted
                .get(1)
                .is_some_and(|&(at, _)| settled_at(at))
        {
            self.schema_adopted.pop_front();
        }
        if let Some(&(at, v)) = self.schema_adopted.front() {
            if settled_at(at) {
                self.ae.set_settled_schema(v);
            }
        }
    }

    /// Runs `f` on the agreement, then persists (before anything is sent:
    /// an acceptor's promise must survive a crash) and carries out what it
    /// asked for.
    pub(super) fn run_schema(&mut self, now: Instant, f: impl FnOnce(&mut SchemaAgreement)) {
        f(&mut self.schema);
        if self
            .schema
            .acceptor()
            .accepted
            .as_ref()
            .is_some_and(|(_, s)| s.version == 1)
        {
            // A founder: its empty data directory lost nothing (see
            // `ChainMachine::set_fresh`).
            self.chain.founded();
        }
        let outputs = self.schema.drain();
        if self.schema.take_dirty() {
            self.persist(true);
        }
        for o in outputs {
            match o {
                AgreementOutput::Send(to, msg) => self.send(to, PeerMsg::Schema(msg)),
                AgreementOutput::Reply(id, result) => self.reply(
                    id,
                    result
                        .map(|version| ClientResponse::SchemaChanged { version })
                        .map_err(ClientError::Schema),
                ),
                AgreementOutput::Adopt(schema) => self.adopt_schema(now, &schema),
                AgreementOutput::Event(e) => {
                    self.out.push_back(Output::Event(NodeEvent::Schema(e)));
                }
            }
        }
    }

    /// Uses a newly chosen version: anti-entropy follows its keyspaces,
    /// and a round starts at once when a replication factor changed (the
    /// keyspace's new replicas pull its keys).
    fn adopt_schema(&mut self, now: Instant, schema: &Schema) {
        // The agreement has switched to this version already: place keys
        // by its ring from now on.
        self.rebuild_placement();
        // A keyspace this version dropped: its data is reclaimed now.
        if self
            .ae
            .keyspace_names()
            .any(|name| crate::reclaim::is_dropped(schema, name))
        {
            self.reclaim.request_walk();
        }
        // CRAQ keyspaces keep their replicas in step through their
        // chains, not by anti-entropy (which would merge their records as
        // last-write-wins values).
        let rf_changed = self.ae.set_keyspaces(
            schema
                .keyspaces
                .values()
                .filter(|k| k.config.strategy == ReplicationStrategy::Leaderless)
                .map(|k| (k.storage.clone(), k.config.replication())),
            now,
        );
        self.chain_with(now, |c, cx, fx| c.on_schema(cx, fx));
        if rf_changed {
            self.ae.request_round(now);
        }

        self.out.push_back(Output::Event(NodeEvent::SchemaAdopted {
            version: schema.version,
            digest: schema.digest(),
            minted_by: schema.minted_by,
        }));
    }
}
