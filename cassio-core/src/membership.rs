//! Membership and liveness: who is in the cluster, where they listen, and
//! who is believed alive. The coordinator asks only this module about
//! liveness.
//!
//! This version is a static peer list with all-to-all heartbeats and a
//! fixed silence threshold; gossip and phi-accrual detection replace its
//! insides without changing what the rest of the core asks of it.

use crate::config::PeerInfo;
use crate::time::Instant;
use crate::types::NodeId;
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Membership messages between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMsg {
    /// "I am alive": the sender's generation (new on every restart) and a
    /// version it bumps on every heartbeat.
    Heartbeat {
        /// Changes on every restart of the sender.
        generation: u64,
        /// Increases with every heartbeat within a generation.
        version: u64,
    },
}

/// A change in what this node believes about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// The peer fell silent and is now believed down.
    PeerDown(NodeId),
    /// The peer was believed down and has been heard from again.
    PeerUp(NodeId),
    /// The peer came back with a new generation: it restarted.
    PeerRestarted {
        /// The peer.
        id: NodeId,
        /// Its new generation.
        generation: u64,
    },
}

#[derive(Clone, Debug)]
struct PeerState {
    addr: SocketAddr,
    last_heard: Instant,
    alive: bool,
    generation: Option<u64>,
    version: u64,
}

/// What this node knows of the cluster's members and their liveness.
#[derive(Clone, Debug)]
pub struct Membership {
    me: NodeId,
    generation: u64,
    version: u64,
    peers: BTreeMap<NodeId, PeerState>,
    heartbeat_interval: Duration,
    down_after: Duration,
    next_heartbeat: Instant,
}

impl Membership {
    /// Membership of `me` (in generation `generation`) with static `peers`,
    /// all presumed alive until they stay silent for `down_after`.
    pub fn new(
        me: NodeId,
        generation: u64,
        peers: &[PeerInfo],
        heartbeat_interval: Duration,
        down_after: Duration,
        now: Instant,
    ) -> Self {
        let peers = peers
            .iter()
            .filter(|p| p.id != me)
            .map(|p| {
                (
                    p.id,
                    PeerState {
                        addr: p.addr,
                        last_heard: now,
                        alive: true,
                        generation: None,
                        version: 0,
                    },
                )
            })
            .collect();
        Membership {
            me,
            generation,
            version: 0,
            peers,
            heartbeat_interval,
            down_after,
            next_heartbeat: now,
        }
    }

    /// This node's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every member, this node included.
    pub fn members(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.peers.keys().copied().collect();
        v.push(self.me);
        v.sort();
        v
    }

    /// Whether `id` is believed alive (this node always is).
    pub fn is_alive(&self, id: NodeId) -> bool {
        id == self.me || self.peers.get(&id).is_some_and(|p| p.alive)
    }

    /// Whether `id` is a known member (this node included).
    pub fn is_member(&self, id: NodeId) -> bool {
        id == self.me || self.peers.contains_key(&id)
    }

    /// Where `id` listens, if it is a known peer.
    pub fn addr_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers.get(&id).map(|p| p.addr)
    }

    /// Records that a message from `from` arrived: any message is a sign of life.
    pub fn heard_from(&mut self, from: NodeId, now: Instant, events: &mut Vec<MembershipEvent>) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.last_heard = p.last_heard.max(now);
            if !p.alive {
                p.alive = true;
                events.push(MembershipEvent::PeerUp(from));
            }
        }
    }

    /// Handles a membership message from `from`.
    pub fn handle_gossip(
        &mut self,
        from: NodeId,
        msg: &GossipMsg,
        now: Instant,
        events: &mut Vec<MembershipEvent>,
    ) {
        self.heard_from(from, now, events);
        let GossipMsg::Heartbeat {
            generation,
            version,
        } = *msg;
        if let Some(p) = self.peers.get_mut(&from) {
            match p.generation {
                Some(g) if generation > g => {
                    p.generation = Some(generation);
                    p.version = version;
                    events.push(MembershipEvent::PeerRestarted {
                        id: from,
                        generation,
                    });
                }
                Some(g) if generation == g => p.version = p.version.max(version),
                Some(_) => {} // a stale heartbeat from before a restart
                None => {
                    p.generation = Some(generation);
                    p.version = version;
                }
            }
        }
    }

    /// Marks silent peers down and, when due, returns the heartbeats to send.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        events: &mut Vec<MembershipEvent>,
    ) -> Vec<(NodeId, SocketAddr, GossipMsg)> {
        for (&id, p) in self.peers.iter_mut() {
            if p.alive && now.saturating_duration_since(p.last_heard) >= self.down_after {
                p.alive = false;
                events.push(MembershipEvent::PeerDown(id));
            }
        }
        let mut out = Vec::new();
        if now >= self.next_heartbeat {
            self.version += 1;
            self.next_heartbeat = now + self.heartbeat_interval;
            let msg = GossipMsg::Heartbeat {
                generation: self.generation,
                version: self.version,
            };
            for (&id, p) in &self.peers {
                out.push((id, p.addr, msg.clone()));
            }
        }
        out
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Instant {
        let next_down = self
            .peers
            .values()
            .filter(|p| p.alive)
            .map(|p| p.last_heard + self.down_after)
            .min();
        match next_down {
            Some(d) => d.min(self.next_heartbeat),
            None => self.next_heartbeat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn silent_peer_goes_down_and_comes_back() {
        let peers = [PeerInfo {
            id: NodeId(2),
            addr: addr(2),
        }];
        let s = Duration::from_secs(1);
        let mut m = Membership::new(NodeId(1), 1, &peers, s, 5 * s, Instant::ZERO);
        let mut ev = Vec::new();
        assert_eq!(m.handle_timeout(Instant::ZERO, &mut ev).len(), 1);
        assert!(m.is_alive(NodeId(2)));
        m.handle_timeout(Instant::ZERO + 5 * s, &mut ev);
        assert_eq!(ev, vec![MembershipEvent::PeerDown(NodeId(2))]);
        assert!(!m.is_alive(NodeId(2)));
        ev.clear();
        let hb = |generation| GossipMsg::Heartbeat {
            generation,
            version: 1,
        };
        m.handle_gossip(NodeId(2), &hb(7), Instant::ZERO + 6 * s, &mut ev);
        assert_eq!(ev, vec![MembershipEvent::PeerUp(NodeId(2))]);
        ev.clear();
        m.handle_gossip(NodeId(2), &hb(8), Instant::ZERO + 7 * s, &mut ev);
        assert_eq!(
            ev,
            vec![MembershipEvent::PeerRestarted {
                id: NodeId(2),
                generation: 8
            }]
        );
        assert!(m.is_alive(NodeId(1)));
        assert!(!m.is_alive(NodeId(9)));
    }
}
