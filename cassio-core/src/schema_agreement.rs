//! Choosing the schema's next version: one single-decree Paxos instance per
//! version.
//!
//! Any node may propose a change (an operator's keyspace command, or the
//! claimant's update of the voters); the voters of version `v` (a list in
//! `v` itself, so every node that knows `v` agrees on it) choose version
//! `v + 1` by majority. Two nodes minting version `v + 1` at once is the
//! case Paxos exists for: a voter promises only the highest ballot it has
//! seen and reports what it already accepted, so at most one value is
//! chosen per version; the other proposer learns of it in its first phase,
//! proposes that value instead, and retries its own change at `v + 2`
//! (reported as [`AgreementEvent::Abandoned`]). A value is used only once
//! chosen.
//!
//! The first version has no voters to ask yet: it is founded by every live
//! `Normal` token owner the proposer sees, unanimously. Two founders that
//! see each other thus cannot choose different first versions; two parts of
//! a cluster that formed without ever seeing each other can, and that is
//! reported as [`AgreementEvent::Conflict`] when they meet.
//!
//! An acceptor's promise and accepted value are persisted before it
//! answers (the node emits `Persist` ahead of the messages), so a restart
//! never lets it forget a promise.

use crate::client_api::RequestId;
use crate::schema::{Schema, SchemaChange, SchemaError};
use crate::time::Instant;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A proposal number: higher rounds win, the node id breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round.
    pub round: u64,
    /// The proposer.
    pub node: NodeId,
}

impl Default for Ballot {
    /// Below every ballot a proposer makes (their rounds start at 1).
    fn default() -> Self {
        Ballot {
            round: 0,
            node: NodeId(0),
        }
    }
}

/// Messages of the agreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemaMsg {
    /// Phase 1a: promise to ignore ballots below this one for `slot`.
    Prepare {
        /// The version being chosen.
        slot: u64,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1b: promised; here is what I accepted for `slot`, if anything.
    Promise {
        /// The version being chosen.
        slot: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// The highest-ballot value this acceptor accepted for `slot`.
        accepted: Option<(Ballot, Schema)>,
    },
    /// Phase 2a: accept this value for `slot`.
    Accept {
        /// The version being chosen.
        slot: u64,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The proposed version.
        value: Schema,
    },
    /// Phase 2b: accepted.
    Accepted {
        /// The version being chosen.
        slot: u64,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// A prepare or accept refused: this acceptor promised a higher ballot.
    Reject {
        /// The version being chosen.
        slot: u64,
        /// The refused ballot.
        ballot: Ballot,
        /// The ballot it promised.
        promised: Ballot,
    },
    /// A chosen version (the newest the sender knows).
    Chosen(Schema),
    /// Send me your newest chosen version if it is newer than `have`.
    Fetch {
        /// The newest version the asker knows.
        have: u64,
    },
}

/// What an acceptor must not forget across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The version these apply to.
    pub slot: u64,
    /// The highest ballot promised for `slot`.
    pub promised: Ballot,
    /// The value accepted for `slot`, with its ballot.
    pub accepted: Option<(Ballot, Schema)>,
}

/// Why a change was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChangeError {
    /// The change is invalid against the schema it would apply to.
    #[error(transparent)]
    Invalid(#[from] SchemaError),
    /// No majority of the voters answered in time; the change may still be
    /// chosen later if a proposal of it reached some voters.
    #[error(
        "no majority of the schema's voters answered in time; check `cassio status` and retry"
    )]
    NoQuorum,
    /// Too many changes wait already.
    #[error("too many schema changes are waiting; retry shortly")]
    Busy,
}

/// What the agreement asks of its node.
#[derive(Clone, Debug, PartialEq)]
pub enum AgreementOutput {
    /// Send a message to a peer.
    Send(NodeId, SchemaMsg),
    /// Answer a waiting change: the version that holds it, or why not.
    Reply(RequestId, Result<u64, ChangeError>),
    /// A new version was chosen (or learned): use it.
    Adopt(Schema),
    /// Something an operator should see.
    Event(AgreementEvent),
}

/// Noteworthy moments of the agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgreementEvent {
    /// This node's proposal for `slot` lost to another node's value, which
    /// it helped choose; its own change is retried at the next version.
    Abandoned {
        /// The version.
        slot: u64,
        /// Who minted the value chosen instead.
        chosen_from: NodeId,
    },
    /// Two different versions with the same number: parts of the cluster
    /// founded their schemas apart. This node keeps its own.
    Conflict {
        /// The version number.
        version: u64,
        /// The minter of ours.
        ours: NodeId,
        /// The minter of theirs.
        theirs: NodeId,
    },
}

/// What the node tells the agreement about the cluster.
pub struct AgreementView {
    /// The `Normal` token owners this node knows of, alive or not (this
    /// node included if it is one): the founders of the first version,
    /// who must all accept it. Empty while this node may not found (it has
    /// not heard from all its seeds yet): the first version then waits.
    pub founders: BTreeSet<NodeId>,
    /// The newest schema version under which every token owner completed a
    /// full anti-entropy round (gossiped): a replication-factor change of a
    /// keyspace waits until its previous one is repaired
    /// ([`Schema::check_repaired`]).
    pub repaired: u64,
}

/// How long a round may go without reaching a majority before it is tried
/// again with a higher ballot.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a change may wait for a majority before its asker is told.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How many changes may wait at once.
const MAX_PENDING: usize = 64;

struct Pending {
    /// Unique among this node's changes (recorded in the version that
    /// holds it).
    id: u64,
    change: SchemaChange,
    waiter: Option<RequestId>,
    deadline: Instant,
}

struct Round {
    slot: u64,
    ballot: Ballot,
    voters: BTreeSet<NodeId>,
    unanimous: bool,
    promises: BTreeMap<NodeId, Option<(Ballot, Schema)>>,
    /// The value sent in phase 2, and whether it is this node's own change.
    value: Option<(Schema, bool)>,
    accepted: BTreeSet<NodeId>,
    started: Instant,
}

impl Round {
    fn quorum(&self) -> usize {
        if self.unanimous {
            self.voters.len()
        } else {
            self.voters.len() / 2 + 1
        }
    }
}

/// The schema agreement of one node: proposer and acceptor.
pub struct SchemaAgreement {
    me: NodeId,
    chosen: Schema,
    acceptor: AcceptorState,
    max_round: u64,
    round: Option<Round>,
    pending: VecDeque<Pending>,
    next_attempt: Instant,
    failures: u32,
    next_change: u64,
    dirty: bool,
    out: Vec<AgreementOutput>,
    #[cfg(feature = "mutations")]
    /// Mutation: promise and accept every ballot, however low.
    pub promise_every_ballot: bool,
}

impl SchemaAgreement {
    /// The agreement of node `me`, starting from `chosen` (its seed or the
    /// version it persisted) and its persisted acceptor state. `change_base`
    /// must differ between runs of the node (its generation, say), so a
    /// change of this run is never mistaken for one of an earlier run.
    pub fn new(
        me: NodeId,
        chosen: Schema,
        acceptor: AcceptorState,
        now: Instant,
        change_base: u64,
    ) -> Self {
        let max_round = acceptor.promised.round;
        SchemaAgreement {
            me,
            chosen,
            acceptor,
            max_round,
            round: None,
            pending: VecDeque::new(),
            next_attempt: now,
            failures: 0,
            next_change: change_base << 20,
            dirty: false,
            out: Vec::new(),
            #[cfg(feature = "mutations")]
            promise_every_ballot: false,
        }
    }

    /// The newest version this node knows to be chosen (or its seed).
    pub fn schema(&self) -> &Schema {
        &self.chosen
    }

    /// What the acceptor must persist.
    pub fn acceptor(&self) -> &AcceptorState {
        &self.acceptor
    }

    /// Whether the acceptor state or the chosen version changed since the
    /// last call (the node persists before sending what follows).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether changes wait or a round runs.
    pub fn busy(&self) -> bool {
        self.round.is_some() || !self.pending.is_empty()
    }

    /// The outputs produced since the last call.
    pub fn drain(&mut self) -> Vec<AgreementOutput> {
        std::mem::take(&mut self.out)
    }

    /// Asks for `change`; `waiter` is answered once it is chosen (or not).
    /// A change wrong whatever the schema holds is refused at once; one
    /// invalid only against this node's version waits for the round's
    /// first phase, which learns any newer chosen version from a majority
    /// before the change is judged: a node behind (the operator's previous
    /// step was chosen elsewhere and has not reached it) must not refuse a
    /// change the newest version allows, nor accept one it forbids.
    pub fn propose(
        &mut self,
        now: Instant,
        change: SchemaChange,
        waiter: Option<RequestId>,
        view: &AgreementView,
    ) {
        let valid = self
            .chosen
            .check_repaired(&change, view.repaired)
            .and_then(|()| self.chosen.apply(&change, self.me));
        if let Some(e) = valid.as_ref().err().filter(|e| e.is_regardless_of_schema()) {
            if let Some(w) = waiter {
                self.out
                    .push(AgreementOutput::Reply(w, Err(e.clone().into())));
            }
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            if let Some(w) = waiter {
                self.out
                    .push(AgreementOutput::Reply(w, Err(ChangeError::Busy)));
            }
            return;
        }
        self.next_change += 1;
        self.pending.push_back(Pending {
            id: self.next_change,
            change,
            waiter,
            deadline: now + CHANGE_TIMEOUT,
        });
        self.tick(now, view);
    }

    /// Starts, restarts or gives up on rounds as time passes.
    pub fn tick(&mut self, now: Instant, view: &AgreementView) {
        while let Some(p) = self.pending.front() {
            if p.deadline > now {
                break;
            }
            let w = p.waiter;
            self.pending.pop_front();
            if let Some(w) = w {
                self.out
                    .push(AgreementOutput::Reply(w, Err(ChangeError::NoQuorum)));
            }
        }
        if let Some(r) = &self.round {
            if now.saturating_duration_since(r.started) < ROUND_TIMEOUT {
                return;
            }
            self.round = None;
            self.failures += 1;
        }
        if self.pending.is_empty() || now < self.next_attempt {
            return;
        }
        self.start_round(now, view);
    }

    /// When the agreement next needs a tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        let round = self.round.as_ref().map(|r| r.started + ROUND_TIMEOUT);
        let retry = (!self.pending.is_empty() && self.round.is_none()).then_some(self.next_attempt);
        let expiry = self.pending.front().map(|p| p.deadline);
        [round, retry, expiry].into_iter().flatten().min()
    }

    fn start_round(&mut self, now: Instant, view: &AgreementView) {
        let slot = self.chosen.version + 1;
        let unanimous = self.chosen.voters.is_empty();
        if unanimous && view.founders.is_empty() {
            // Not yet allowed to found: look again shortly.
            self.next_attempt = now + Duration::from_millis(500);
            return;
        }
        let voters = if unanimous {
            let mut f = view.founders.clone();
            f.insert(self.me);
            f
        } else {
            self.chosen.voters.clone()
        };
        self.max_round += 1;
        let ballot = Ballot {
            round: self.max_round,
            node: self.me,
        };
        self.round = Some(Round {
            slot,
            ballot,
            voters: voters.clone(),
            unanimous,
            promises: BTreeMap::new(),
            value: None,
            accepted: BTreeSet::new(),
            started: now,
        });
        for v in voters {
            self.send(now, v, SchemaMsg::Prepare { slot, ballot }, view);
        }
    }

    /// Handles a message from `from`.
    pub fn on_message(&mut self, now: Instant, from: NodeId, msg: SchemaMsg, view: &AgreementView) {
        match msg {
            SchemaMsg::Prepare { slot, ballot } => {
                if let Some(reply) = self.on_prepare(from, slot, ballot) {
                    self.send(now, from, reply, view);
                }
            }
            SchemaMsg::Accept {
                slot,
                ballot,
                value,
            } => {
                if let Some(reply) = self.on_accept(from, slot, ballot, value) {
                    self.send(now, from, reply, view);
                }
            }
            SchemaMsg::Promise {
                slot,
                ballot,
                accepted,
            } => self.on_promise(now, from, slot, ballot, accepted, view),
            SchemaMsg::Accepted { slot, ballot } => self.on_accepted(now, from, slot, ballot, view),
            SchemaMsg::Reject {
                slot,
                ballot,
                promised,
            } => {
                self.max_round = self.max_round.max(promised.round);
                let ours = self
                    .round
                    .as_ref()
                    .is_some_and(|r| r.slot == slot && r.ballot == ballot);
                if ours {
                    self.round = None;
                    self.failures += 1;
                    // Back off by a pseudo-random amount that differs per
                    // node, so two duelling proposers stop colliding.
                    let spread =
                        (self.me.0 ^ u64::from(self.failures)).wrapping_mul(0x9E37_79B9) % 200;
                    let backoff = 50 * u64::from(self.failures.min(8)) + spread;
                    self.next_attempt = now + Duration::from_millis(backoff);
                }
            }
            SchemaMsg::Chosen(schema) => self.learn(now, from, schema, view),
            SchemaMsg::Fetch { have } => {
                if self.chosen.version > have {
                    let s = self.chosen.clone();
                    self.send(now, from, SchemaMsg::Chosen(s), view);
                }
            }
        }
    }

    /// A peer (in any message) said it knows version `version`: fetch it
    /// if it is newer than ours.
    pub fn peer_version(&mut self, now: Instant, from: NodeId, version: u64, view: &AgreementView) {
        if version > self.chosen.version {
            let have = self.chosen.version;
            self.send(now, from, SchemaMsg::Fetch { have }, view);
        }
    }

    fn on_prepare(&mut self, _from: NodeId, slot: u64, ballot: Ballot) -> Option<SchemaMsg> {
        self.max_round = self.max_round.max(ballot.round);
        if slot <= self.chosen.version {
            return Some(SchemaMsg::Chosen(self.chosen.clone()));
        }
        if slot > self.chosen.version + 1 {
            // The proposer knows versions this node lacks: fetch them
            // first; it will prepare again.
            return Some(SchemaMsg::Fetch {
                have: self.chosen.version,
            });
        }
        self.reset_acceptor(slot);
        #[cfg(feature = "mutations")]
        let every = self.promise_every_ballot;
        #[cfg(not(feature = "mutations"))]
        let every = false;
        if ballot > self.acceptor.promised || every {
            self.acceptor.promised = ballot;
            self.dirty = true;
            Some(SchemaMsg::Promise {
                slot,
                ballot,
                accepted: self.acceptor.accepted.clone(),
            })
        } else {
            Some(SchemaMsg::Reject {
                slot,
                ballot,
                promised: self.acceptor.promised,
            })
        }
    }

    fn on_accept(
        &mut self,
        _from: NodeId,
        slot: u64,
        ballot: Ballot,
        value: Schema,
    ) -> Option<SchemaMsg> {
        if slot <= self.chosen.version {
            return Some(SchemaMsg::Chosen(self.chosen.clone()));
        }
        if slot > self.chosen.version + 1 || value.version != slot {
            return None;
        }
        self.reset_acceptor(slot);
        #[cfg(feature = "mutations")]
        let every = self.promise_every_ballot;
        #[cfg(not(feature = "mutations"))]
        let every = false;
        if ballot >= self.acceptor.promised || every {
            self.acceptor.promised = self.acceptor.promised.max(ballot);
            self.acceptor.accepted = Some((ballot, value));
            self.dirty = true;
            Some(SchemaMsg::Accepted { slot, ballot })
        } else {
            Some(SchemaMsg::Reject {
                slot,
                ballot,
                promised: self.acceptor.promised,
            })
        }
    }

    fn reset_acceptor(&mut self, slot: u64) {
        if self.acceptor.slot != slot {
            self.acceptor = AcceptorState {
                slot,
                promised: Ballot::default(),
                accepted: None,
            };
            self.dirty = true;
        }
    }

    fn on_promise(
        &mut self,
        now: Instant,
        from: NodeId,
        slot: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Schema)>,
        view: &AgreementView,
    ) {
        let Some(r) = self.round.as_mut() else { return };
        if r.slot != slot || r.ballot != ballot || !r.voters.contains(&from) || r.value.is_some() {
            return;
        }
        r.promises.insert(from, accepted);
        if r.promises.len() < r.quorum() {
            return;
        }
        // Paxos: the highest-ballot value any promiser accepted must be
        // proposed again; only if none did may this node propose its own.
        let prior = r
            .promises
            .values()
            .flatten()
            .max_by_key(|(b, _)| *b)
            .map(|(_, v)| v.clone());
        let value = match prior {
            Some(v) => (v, false),
            None => {
                let Some(p) = self.pending.front() else {
                    self.round = None;
                    return;
                };
                let valid = self.chosen.check_repaired(&p.change, view.repaired);
                match valid.and_then(|()| self.chosen.apply_as(&p.change, self.me, p.id)) {
                    Ok(mut v) => {
                        if r.unanimous {
                            // The first version: its founders vote next.
                            v.voters = r.voters.clone();
                        }
                        (v, true)
                    }
                    Err(e) => {
                        // Valid when asked, invalid now (a concurrent
                        // change won): tell the asker, try the next one.
                        let w = p.waiter;
                        self.pending.pop_front();
                        if let Some(w) = w {
                            self.out.push(AgreementOutput::Reply(w, Err(e.into())));
                        }
                        self.round = None;
                        return self.tick(now, view);
                    }
                }
            }
        };
        let Some(r) = self.round.as_mut() else { return };
        r.value = Some(value.clone());
        let voters: Vec<NodeId> = r.voters.iter().copied().collect();
        for v in voters {
            let msg = SchemaMsg::Accept {
                slot,
                ballot,
                value: value.0.clone(),
            };
            self.send(now, v, msg, view);
        }
    }

    fn on_accepted(
        &mut self,
        now: Instant,
        from: NodeId,
        slot: u64,
        ballot: Ballot,
        view: &AgreementView,
    ) {
        let Some(r) = self.round.as_mut() else { return };
        if r.slot != slot || r.ballot != ballot || !r.voters.contains(&from) || r.value.is_none() {
            return;
        }
        r.accepted.insert(from);
        if r.accepted.len() < r.quorum() {
            return;
        }
        let Some(r) = self.round.take() else { return };
        let Some((value, _)) = r.value else { return };
        self.failures = 0;
        if value.minted_by != self.me {
            self.out
                .push(AgreementOutput::Event(AgreementEvent::Abandoned {
                    slot,
                    chosen_from: value.minted_by,
                }));
        }
        let everyone = r.voters;
        self.adopt(value.clone());
        for v in everyone {
            if v != self.me {
                self.send(now, v, SchemaMsg::Chosen(value.clone()), view);
            }
        }
        self.tick(now, view);
    }

    fn learn(&mut self, now: Instant, from: NodeId, schema: Schema, view: &AgreementView) {
        if schema.version > self.chosen.version {
            self.adopt(schema);
            // A round for an older slot is void; its change is retried.
            if self
                .round
                .as_ref()
                .is_some_and(|r| r.slot <= self.chosen.version)
            {
                self.round = None;
            }
            self.tick(now, view);
        } else if schema.version == self.chosen.version
            && schema.version > 0
            && schema.digest() != self.chosen.digest()
        {
            self.out
                .push(AgreementOutput::Event(AgreementEvent::Conflict {
                    version: schema.version,
                    ours: self.chosen.minted_by,
                    theirs: schema.minted_by,
                }));
        } else if schema.version < self.chosen.version {
            let s = self.chosen.clone();
            self.send(now, from, SchemaMsg::Chosen(s), view);
        }
    }

    fn adopt(&mut self, schema: Schema) {
        self.chosen = schema.clone();
        self.dirty = true;
        // Answer every waiting change the new version holds (ours, chosen
        // through us or learned from another node).
        let me = self.me;
        let mut done = Vec::new();
        self.pending
            .retain(|p| match schema.holds_change(me, p.id) {
                Some(v) => {
                    done.extend(p.waiter.map(|w| (w, v)));
                    false
                }
                None => true,
            });
        for (w, v) in done {
            self.out.push(AgreementOutput::Reply(w, Ok(v)));
        }
        self.out.push(AgreementOutput::Adopt(schema));
    }

    /// Sends `msg` to `to`; to itself, handles it at once.
    fn send(&mut self, now: Instant, to: NodeId, msg: SchemaMsg, view: &AgreementView) {
        if to == self.me {
            self.on_message(now, to, msg, view);
        } else {
            self.out.push(AgreementOutput::Send(to, msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Consistency, KeyspaceConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn seed(me: NodeId) -> Schema {
        let mut ks = BTreeMap::new();
        ks.insert("default".to_string(), KeyspaceConfig::default_keyspace(3));
        Schema::seed(me, &ks)
    }

    fn create(name: &str) -> SchemaChange {
        SchemaChange::Create {
            name: name.into(),
            replication_factor: 3,
            default_consistency: Consistency::Quorum,
        }
    }

    /// `n` nodes exchanging messages through a network that drops, delays
    /// and reorders them (each message waits a random number of steps).
    struct Net {
        nodes: Vec<SchemaAgreement>,
        /// (deliver at step, from, to, msg)
        inflight: Vec<(u64, NodeId, NodeId, SchemaMsg)>,
        /// Every version each node adopted, in order.
        adopted: Vec<Vec<Schema>>,
        replies: Vec<(RequestId, Result<u64, ChangeError>)>,
        events: Vec<AgreementEvent>,
        rng: ChaCha8Rng,
        loss: f64,
        step: u64,
    }

    impl Net {
        fn new(n: u64, rng_seed: u64, loss: f64) -> Net {
            let t0 = Instant::from_micros(0);
            Net {
                nodes: (1..=n)
                    .map(|i| {
                        SchemaAgreement::new(
                            NodeId(i),
                            seed(NodeId(i)),
                            AcceptorState::default(),
                            t0,
                            1,
                        )
                    })
                    .collect(),
                inflight: Vec::new(),
                adopted: vec![Vec::new(); n as usize],
                replies: Vec::new(),
                events: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(rng_seed),
                loss,
                step: 0,
            }
        }

        /// `n` nodes that founded the schema (version 1, all voters) over
        /// a lossless network.
        fn founded(n: u64, rng_seed: u64) -> Net {
            let mut net = Net::new(n, rng_seed, 0.0);
            net.propose(
                0,
                SchemaChange::SetVoters((1..=n).map(NodeId).collect()),
                100,
            );
            net.run(400);
            net
        }

        fn view(&self) -> AgreementView {
            AgreementView {
                founders: (1..=self.nodes.len() as u64).map(NodeId).collect(),
                repaired: u64::MAX,
            }
        }

        fn now(&self) -> Instant {
            Instant::from_micros(self.step * 10_000)
        }

        fn collect(&mut self, i: usize) {
            for o in self.nodes[i].drain() {
                match o {
                    AgreementOutput::Send(to, msg) => {
                        if self.rng.random_bool(self.loss) {
                            continue;
                        }
                        let at = self.step + self.rng.random_range(1..20);
                        let from = NodeId(i as u64 + 1);
                        if self.rng.random_bool(0.05) {
                            self.inflight.push((at + 3, from, to, msg.clone()));
                        }
                        self.inflight.push((at, from, to, msg));
                    }
                    AgreementOutput::Adopt(s) => self.adopted[i].push(s),
                    AgreementOutput::Reply(id, r) => self.replies.push((id, r)),
                    AgreementOutput::Event(e) => self.events.push(e),
                }
            }
        }

        fn propose(&mut self, i: usize, change: SchemaChange, id: u64) {
            let (now, view) = (self.now(), self.view());
            self.nodes[i].propose(now, change, Some(RequestId(id)), &view);
            self.collect(i);
        }

        fn run(&mut self, steps: u64) {
            for _ in 0..steps {
                self.step += 1;
                let (now, view) = (self.now(), self.view());
                let step = self.step;
                let (due, later): (Vec<_>, Vec<_>) =
                    self.inflight.drain(..).partition(|(at, ..)| *at <= step);
                self.inflight = later;
                for (_, from, to, msg) in due {
                    let i = (to.0 - 1) as usize;
                    self.nodes[i].on_message(now, from, msg, &view);
                    self.collect(i);
                }
                for i in 0..self.nodes.len() {
                    self.nodes[i].tick(now, &view);
                    self.collect(i);
                }
            }
        }

        /// Versions for which two nodes adopted different values.
        fn disagreements(&self) -> usize {
            let mut by_version: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            for seen in &self.adopted {
                for s in seen {
                    by_version.entry(s.version).or_default().insert(s.digest());
                }
            }
            by_version.values().filter(|d| d.len() > 1).count()
        }

        /// No two nodes adopted different values for one version.
        fn agree(&self) {
            assert_eq!(self.disagreements(), 0, "two values chosen for one version");
        }
    }

    #[test]
    fn one_proposer_creates_a_keyspace_on_every_node() {
        let mut net = Net::new(3, 1, 0.0);
        net.propose(0, create("a"), 1);
        net.run(200);
        net.agree();
        assert_eq!(net.replies, vec![(RequestId(1), Ok(1))]);
        for n in &net.nodes {
            assert!(n.schema().keyspace("a").is_some());
            assert_eq!(n.schema().voters.len(), 3, "founded by all three");
        }
    }

    #[test]
    fn a_node_behind_judges_a_change_against_the_newest_version() {
        let mut net = Net::new(3, 7, 0.0);
        net.propose(
            0,
            SchemaChange::SetVoters((1..=3).map(NodeId).collect()),
            100,
        );
        net.run(400);
        // Node 3 hears nothing while nodes 1 and 2 choose keyspace "a".
        net.propose(0, create("a"), 1);
        for _ in 0..400 {
            net.inflight
                .retain(|(_, from, to, _)| *from != NodeId(3) && *to != NodeId(3));
            net.run(1);
        }
        assert!(net.replies.iter().any(|(id, r)| id.0 == 1 && r.is_ok()));
        assert!(
            net.nodes[2].schema().keyspace("a").is_none(),
            "node 3 is behind"
        );
        // Asked on node 3 at once, a drop of "a" is judged after the round
        // learned the newest version: chosen, not refused as unknown.
        net.propose(2, SchemaChange::Drop { name: "a".into() }, 2);
        net.run(400);
        net.agree();
        let answer = net
            .replies
            .iter()
            .find(|(id, _)| id.0 == 2)
            .map(|(_, r)| r.clone());
        assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
        for n in &net.nodes {
            assert!(n.schema().keyspace("a").is_none());
        }
        // Wrong whatever the version: refused at once.
        net.propose(
            2,
            SchemaChange::Drop {
                name: "default".into(),
            },
            3,
        );
        let answer = net
            .replies
            .iter()
            .find(|(id, _)| id.0 == 3)
            .map(|(_, r)| r.clone());
        assert!(
            answer.is_some_and(|r| r.is_err()),
            "dropping default refused at once"
        );
    }

    #[test]
    fn two_concurrent_minters_never_choose_two_values() {
        for seed in 0..200 {
            // Found the cluster first, then two nodes mint at once over a
            // network that loses, duplicates and reorders messages.
            let mut net = Net::founded(5, seed);
            net.loss = 0.1;
            net.propose(1, create("b"), 1);
            net.propose(3, create("c"), 2);
            net.run(1500);
            net.agree();
            let mut got: Vec<_> = net
                .replies
                .iter()
                .filter(|(id, _)| id.0 < 100)
                .cloned()
                .collect();
            got.sort_by_key(|(id, _)| *id);
            let versions: BTreeSet<u64> = got.iter().filter_map(|(_, r)| r.clone().ok()).collect();
            assert_eq!(got.len(), 2, "seed {seed}: both changes answered: {got:?}");
            assert_eq!(versions.len(), 2, "seed {seed}: one version each: {got:?}");
            let newest = net.nodes.iter().map(|n| n.schema().version).max().unwrap();
            let s = net
                .nodes
                .iter()
                .find(|n| n.schema().version == newest)
                .unwrap()
                .schema();
            assert!(
                s.keyspace("b").is_some() && s.keyspace("c").is_some(),
                "seed {seed}"
            );
        }
    }

    fn ring_of(ids: &[u64]) -> crate::agreed_ring::AgreedRing {
        let mut ring = crate::agreed_ring::AgreedRing::default();
        for &i in ids {
            ring.members.insert(
                NodeId(i),
                crate::agreed_ring::RingMember {
                    tokens: vec![crate::types::Token(i * 1000)],
                    location: Default::default(),
                    now: true,
                    next: true,
                },
            );
        }
        ring
    }

    #[test]
    fn two_claimants_at_once_put_one_ring_in_use_and_drop_the_other() {
        for seed in 0..200 {
            let mut net = Net::founded(5, seed);
            let base = net.nodes[0].schema().version;
            // Two nodes claim different rings against the same version (say
            // their gossip views differed for a moment), over a lossy,
            // duplicating, reordering network.
            net.loss = 0.1;
            let voters: BTreeSet<NodeId> = (1..=5).map(NodeId).collect();
            let (a, b) = (ring_of(&[1, 2, 3, 4, 5]), ring_of(&[1, 2, 3, 4, 5, 6]));
            net.propose(
                1,
                SchemaChange::Claim {
                    base,
                    voters: voters.clone(),
                    ring: a.clone(),
                },
                1,
            );
            net.propose(
                3,
                SchemaChange::Claim {
                    base,
                    voters,
                    ring: b.clone(),
                },
                2,
            );
            net.run(2500);
            net.agree();
            // Exactly one claim is chosen, as the very next version; the
            // other is refused as stale, never applied over it.
            let ok: Vec<u64> = net
                .replies
                .iter()
                .filter(|(id, _)| id.0 < 100)
                .filter_map(|(_, r)| r.clone().ok())
                .collect();
            assert_eq!(ok, vec![base + 1], "seed {seed}: {:?}", net.replies);
            let stale = net.replies.iter().any(|(_, r)| {
                matches!(r, Err(ChangeError::Invalid(SchemaError::StaleClaim { .. })))
            });
            assert!(stale, "seed {seed}: {:?}", net.replies);
            let newest = net.nodes.iter().map(|n| n.schema().version).max().unwrap();
            assert_eq!(newest, base + 1, "seed {seed}: nothing applied on top");
            for n in net.nodes.iter().filter(|n| n.schema().version == newest) {
                let ring = n.schema().ring.as_ref();
                assert!(ring == Some(&a) || ring == Some(&b), "seed {seed}");
            }
        }
    }

    /// The checker above catches an acceptor that promises every ballot.
    #[cfg(feature = "mutations")]
    #[test]
    fn promising_every_ballot_chooses_two_values() {
        let mut broken = 0;
        for seed in 0..200 {
            let mut net = Net::new(5, seed, 0.0);
            net.propose(
                0,
                SchemaChange::SetVoters((1..=5).map(NodeId).collect()),
                100,
            );
            net.run(400);
            for n in &mut net.nodes {
                n.promise_every_ballot = true;
            }
            net.loss = 0.1;
            net.propose(1, create("b"), 1);
            net.propose(3, create("c"), 2);
            net.run(1500);
            broken += usize::from(net.disagreements() > 0);
        }
        assert!(
            broken > 0,
            "no seed of 200 chose two values with the mutation on"
        );
        eprintln!("promise_every_ballot: {broken} of 200 seeds chose two values for a version");
    }

    #[test]
    fn a_lost_race_is_reported_as_abandoned() {
        let mut seen = false;
        for seed in 0..50 {
            let mut net = Net::new(3, seed, 0.0);
            net.propose(
                0,
                SchemaChange::SetVoters((1..=3).map(NodeId).collect()),
                100,
            );
            net.run(200);
            net.propose(0, create("x"), 1);
            net.propose(2, create("y"), 2);
            net.run(800);
            net.agree();
            seen |= net
                .events
                .iter()
                .any(|e| matches!(e, AgreementEvent::Abandoned { .. }));
        }
        assert!(
            seen,
            "in 50 races some proposer must lose phase 1 to the other's value"
        );
    }

    #[test]
    fn conflicting_creates_answer_the_loser_with_an_error() {
        let mut net = Net::new(3, 7, 0.0);
        net.propose(
            0,
            SchemaChange::SetVoters((1..=3).map(NodeId).collect()),
            100,
        );
        net.run(200);
        net.propose(0, create("same"), 1);
        net.propose(1, create("same"), 2);
        net.run(800);
        net.agree();
        let ok = net
            .replies
            .iter()
            .filter(|(id, r)| id.0 < 100 && r.is_ok())
            .count();
        let exists = net
            .replies
            .iter()
            .filter(|(_, r)| matches!(r, Err(ChangeError::Invalid(SchemaError::Exists(_)))))
            .count();
        assert_eq!((ok, exists), (1, 1), "{:?}", net.replies);
    }

    #[test]
    fn a_minority_cannot_choose() {
        let mut net = Net::new(3, 3, 0.0);
        net.propose(
            0,
            SchemaChange::SetVoters((1..=3).map(NodeId).collect()),
            100,
        );
        net.run(200);
        // Every message to or from nodes 2 and 3 is lost from now on.
        net.loss = 1.0;
        net.propose(0, create("alone"), 1);
        net.run(3000);
        assert_eq!(net.nodes[0].schema().version, 1);
        assert_eq!(
            net.replies.last(),
            Some(&(RequestId(1), Err(ChangeError::NoQuorum)))
        );
    }

    #[test]
    fn a_restarted_acceptor_keeps_its_promise() {
        let t0 = Instant::from_micros(0);
        let view = AgreementView {
            founders: BTreeSet::new(),
            repaired: u64::MAX,
        };
        let mut a =
            SchemaAgreement::new(NodeId(1), seed(NodeId(1)), AcceptorState::default(), t0, 1);
        let high = Ballot {
            round: 9,
            node: NodeId(2),
        };
        a.on_message(
            t0,
            NodeId(2),
            SchemaMsg::Prepare {
                slot: 1,
                ballot: high,
            },
            &view,
        );
        assert!(a.take_dirty());
        // Restart from what was persisted.
        let mut b =
            SchemaAgreement::new(NodeId(1), a.schema().clone(), a.acceptor().clone(), t0, 2);
        let low = Ballot {
            round: 3,
            node: NodeId(3),
        };
        b.on_message(
            t0,
            NodeId(3),
            SchemaMsg::Prepare {
                slot: 1,
                ballot: low,
            },
            &view,
        );
        assert_eq!(
            b.drain(),
            vec![AgreementOutput::Send(
                NodeId(3),
                SchemaMsg::Reject {
                    slot: 1,
                    ballot: low,
                    promised: high
                }
            )]
        );
    }
}
