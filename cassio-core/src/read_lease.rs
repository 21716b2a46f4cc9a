//! Read leases with self-fencing, for chain-replicated (CRAQ) keyspaces
//! (used by [`crate::chain`]).
//!
//! A chain replica may answer reads, and a tail version queries, only
//! while no newer chain configuration can be in use. Configurations are
//! schema versions (epochs) chosen by a majority of the schema's voters.
//! The rule, 3FS's with the voters in place of a manager:
//!
//! - The holder sends heartbeats (rounds) to every voter; a voter answers
//!   with the newest epoch it has accepted.
//! - Once a majority of voters answered a round *on the holder's epoch*,
//!   the holder may serve until the round's sending time plus `period / 2`
//!   by its own monotonic clock ([`ReadLease::valid_until`]).
//! - A newly chosen epoch is used only `period` after the proposer learned
//!   it was chosen ([`new_epoch_usable_at`]).
//!
//! Why no two epochs serve at once: the epoch `e + 1` was accepted by a
//! majority before it was chosen, at time `c`. Any majority that renewed
//! a lease on `e` shares a voter with it, and that voter answered on `e`,
//! so it answered before it accepted `e + 1`, before `c`; the round was
//! sent earlier still. So every lease on `e` ends before `c + period / 2`,
//! while `e + 1` starts at or after `c + period`. The margin of
//! `period / 2` absorbs clocks that run at different rates (up to a
//! factor of about 1.5 between holder and proposer), never clocks that
//! jump: these are monotonic clocks.

use crate::time::Instant;
use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Rounds kept waiting for answers at most; older ones are forgotten
/// (answers to them are ignored). Bounds the state fed by the network.
const MAX_ROUNDS: usize = 64;

/// One heartbeat round: when it was sent and the voters that answered it
/// on the holder's epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Round {
    sent: Instant,
    acks: BTreeSet<NodeId>,
}

/// What an answer to a heartbeat did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The round reached a majority: the lease holds until this time.
    Renewed {
        /// The end of the lease.
        until: Instant,
    },
    /// The voter has accepted a newer epoch: the lease is void at once
    /// and this node must fetch the newer configuration.
    Superseded {
        /// The voter's epoch.
        epoch: u64,
    },
    /// Counted, not yet a majority; or not counted (a stranger, an older
    /// epoch, a forgotten round, a duplicate).
    Nothing,
}

/// A chain replica's read lease on one epoch.
#[derive(Clone, Debug)]
pub struct ReadLease {
    epoch: u64,
    voters: BTreeSet<NodeId>,
    period: Duration,
    rounds: BTreeMap<u64, Round>,
    next_round: u64,
    valid_until: Option<Instant>,
}

impl ReadLease {
    /// No lease yet, on `epoch`, whose voters are `voters`; a lease lasts
    /// `period / 2` from the round that renewed it.
    pub fn new(epoch: u64, voters: BTreeSet<NodeId>, period: Duration) -> Self {
        ReadLease {
            epoch,
            voters,
            period,
            rounds: BTreeMap::new(),
            next_round: 0,
            valid_until: None,
        }
    }

    /// The epoch this lease is on.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new configuration is in use here: the lease on the old one is
    /// void, and rounds sent under it no longer count.
    pub fn set_epoch(&mut self, epoch: u64, voters: BTreeSet<NodeId>) {
        self.epoch = epoch;
        self.voters = voters;
        self.rounds.clear();
        self.valid_until = None;
    }

    /// Starts a heartbeat round sent now: its id goes to every voter, and
    /// their answers name it.
    pub fn start_round(&mut self, now: Instant) -> u64 {
        let id = self.next_round;
        self.next_round += 1;
        // A round older than half a period can no longer extend the lease
        // past now; the cap bounds the rest.
        let horizon = self.period / 2;
        self.rounds
            .retain(|_, r| now.saturating_duration_since(r.sent) < horizon);
        while self.rounds.len() >= MAX_ROUNDS {
            self.rounds.pop_first();
        }
        self.rounds.insert(
            id,
            Round {
                sent: now,
                acks: BTreeSet::new(),
            },
        );
        id
    }

    /// Voter `from` answered round `round`, having accepted up to `epoch`.
    pub fn on_answer(&mut self, round: u64, from: NodeId, epoch: u64) -> LeaseEvent {
        if !self.voters.contains(&from) {
            return LeaseEvent::Nothing;
        }
        if epoch > self.epoch {
            self.valid_until = None;
            self.rounds.clear();
            return LeaseEvent::Superseded { epoch };
        }
        if epoch < self.epoch {
            // A voter behind: it neither renews nor voids.
            return LeaseEvent::Nothing;
        }
        let majority = self.voters.len() / 2 + 1;
        let Some(r) = self.rounds.get_mut(&round) else {
            return LeaseEvent::Nothing;
        };
        if !r.acks.insert(from) || r.acks.len() != majority {
            return LeaseEvent::Nothing;
        }
        let until = r.sent + self.period / 2;
        self.valid_until = Some(self.valid_until.map_or(until, |u| u.max(until)));
        LeaseEvent::Renewed { until }
    }

    /// Until when this node may answer reads on its epoch (`None`: no
    /// lease).
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }

    /// Whether this node may answer reads now.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }
}

/// When a newly chosen epoch may be used (its tail answer version
/// queries, its replicas serve reads): `period` after the proposer learned
/// it was chosen, when every lease on the epochs before it has ended.
pub fn new_epoch_usable_at(learned_chosen: Instant, period: Duration) -> Instant {
    learned_chosen + period
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const T: Duration = Duration::from_secs(2);

    fn voters(n: u64) -> BTreeSet<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn ms(v: u64) -> Instant {
        Instant::from_micros(v * 1000)
    }

    #[test]
    fn a_majority_on_the_epoch_renews_until_half_a_period_after_sending() {
        let mut l = ReadLease::new(3, voters(5), T);
        let r = l.start_round(ms(100));
        assert!(!l.is_valid(ms(100)));
        assert_eq!(l.on_answer(r, NodeId(1), 3), LeaseEvent::Nothing);
        assert_eq!(l.on_answer(r, NodeId(2), 3), LeaseEvent::Nothing);
        assert!(!l.is_valid(ms(150)), "two of five are no majority");
        assert_eq!(
            l.on_answer(r, NodeId(3), 3),
            LeaseEvent::Renewed { until: ms(1100) }
        );
        assert!(l.is_valid(ms(1099)));
        assert!(
            !l.is_valid(ms(1100)),
            "the lease ends half a period after sending"
        );
        // A fourth answer changes nothing.
        assert_eq!(l.on_answer(r, NodeId(4), 3), LeaseEvent::Nothing);
    }

    #[test]
    fn strangers_duplicates_older_epochs_and_forgotten_rounds_do_not_count() {
        let mut l = ReadLease::new(3, voters(3), T);
        let r = l.start_round(ms(0));
        assert_eq!(l.on_answer(r, NodeId(9), 3), LeaseEvent::Nothing);
        assert_eq!(l.on_answer(r, NodeId(1), 3), LeaseEvent::Nothing);
        assert_eq!(l.on_answer(r, NodeId(1), 3), LeaseEvent::Nothing);
        assert_eq!(l.on_answer(r, NodeId(2), 2), LeaseEvent::Nothing);
        assert_eq!(l.on_answer(r + 7, NodeId(3), 3), LeaseEvent::Nothing);
        assert!(!l.is_valid(ms(1)));
        // A round older than half a period is forgotten.
        let late = l.start_round(ms(5_000));
        assert_eq!(l.on_answer(r, NodeId(3), 3), LeaseEvent::Nothing);
        assert!(!l.is_valid(ms(5_000)));
        l.on_answer(late, NodeId(2), 3);
        assert!(matches!(
            l.on_answer(late, NodeId(3), 3),
            LeaseEvent::Renewed { .. }
        ));
    }

    #[test]
    fn a_newer_epoch_voids_the_lease_and_so_does_adopting_one() {
        let mut l = ReadLease::new(3, voters(3), T);
        let r = l.start_round(ms(0));
        l.on_answer(r, NodeId(1), 3);
        l.on_answer(r, NodeId(2), 3);
        assert!(l.is_valid(ms(10)));
        assert_eq!(
            l.on_answer(r, NodeId(3), 4),
            LeaseEvent::Superseded { epoch: 4 }
        );
        assert!(!l.is_valid(ms(10)));
        let r = l.start_round(ms(20));
        l.on_answer(r, NodeId(1), 3);
        l.on_answer(r, NodeId(2), 3);
        assert!(l.is_valid(ms(30)));
        l.set_epoch(4, voters(3));
        assert!(!l.is_valid(ms(30)));
        // Answers to a round of the old epoch no longer count.
        assert_eq!(l.on_answer(r, NodeId(3), 4), LeaseEvent::Nothing);
    }

    #[test]
    fn rounds_waiting_for_answers_are_bounded() {
        let mut l = ReadLease::new(1, voters(3), Duration::from_secs(3600));
        for i in 0..1000 {
            l.start_round(ms(i));
        }
        assert!(l.rounds.len() <= MAX_ROUNDS);
    }

    /// Five voters move to epoch 2 at random times while a holder on
    /// epoch 1 renews every 100 ms over links delayed by up to 400 ms
    /// each way, and hears nothing from a voter once it moved. No lease on epoch 1 may be valid once epoch 2 is usable,
    /// the proposer learning it was chosen at the earliest the moment the
    /// third voter accepted it; and before the move, the holder keeps its
    /// lease most of the time.
    #[test]
    fn an_old_epoch_never_serves_once_a_new_one_is_usable() {
        for seed in 0..500u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut accepts: Vec<u64> = (0..5).map(|_| rng.random_range(2_000..6_000)).collect();
            let switch_at: BTreeMap<NodeId, u64> = (1..=5u64)
                .map(NodeId)
                .zip(accepts.iter().copied())
                .collect();
            accepts.sort_unstable();
            let chosen = accepts[2];
            let usable = new_epoch_usable_at(ms(chosen), T);
            let mut l = ReadLease::new(1, voters(5), T);
            // (arrival time in ms, round, voter, epoch)
            let mut answers: Vec<(u64, u64, NodeId, u64)> = Vec::new();
            let mut valid_ms = 0u64;
            for now in 0..8_000u64 {
                if now % 100 == 0 {
                    let round = l.start_round(ms(now));
                    for (&v, &switch) in &switch_at {
                        let there = now + rng.random_range(0..400);
                        let back = there + rng.random_range(0..400);
                        let epoch = if there >= switch { 2 } else { 1 };
                        answers.push((back, round, v, epoch));
                    }
                }
                answers.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
                while answers.last().is_some_and(|a| a.0 <= now) {
                    let Some((_, round, v, epoch)) = answers.pop() else {
                        break;
                    };
                    // The holder is cut off from the voters that moved on
                    // (a partitioned old tail): it never hears of epoch 2,
                    // so only the lease's own rule protects.
                    if epoch == 1 {
                        l.on_answer(round, v, epoch);
                    }
                }
                if l.is_valid(ms(now)) {
                    assert!(
                        ms(now) < usable,
                        "seed {seed}: epoch 1 served at {now} ms, epoch 2 usable at {usable:?}"
                    );
                    if now < 2_000 {
                        valid_ms += 1;
                    }
                }
            }
            assert!(
                valid_ms >= 1_000,
                "seed {seed}: the lease held only {valid_ms} of the first 2000 ms"
            );
        }
    }
}
