//! The keyspace check: whether this node's definition of a keyspace agrees
//! with the one most of the cluster's token owners gossip.
//!
//! A node whose replication factor or default level differs from the rest
//! of the cluster would place or count replicas differently from them, so
//! it refuses to coordinate that keyspace's requests (with
//! [`ClientError::ConfigMismatch`]) until the definitions agree. The verdict
//! is cached per membership view epoch: definitions change only with gossip.

use crate::client_api::ClientError;
use crate::config::KeyspaceConfig;
use crate::membership::Membership;
use crate::output::NodeEvent;
use std::collections::BTreeMap;

/// Keyspace verdicts, cached per membership view epoch.
#[derive(Debug, Default)]
pub(crate) struct KeyspaceCheck {
    /// The view epoch the cached verdicts were computed under.
    epoch: u64,
    /// Each keyspace's verdict under that view.
    verdicts: BTreeMap<String, Option<ClientError>>,
}

impl KeyspaceCheck {
    /// Whether `ours`, this node's definition of `keyspace`, disagrees with
    /// most of `membership`'s token owners that gossip one. The event (to
    /// emit before the error is answered) comes only with the first verdict
    /// of a view epoch, so a mismatch is reported once per view change.
    /// `ours` is `None` for a keyspace this node does not know: no verdict.
    pub fn check(
        &mut self,
        membership: &Membership,
        keyspace: &str,
        ours: Option<&KeyspaceConfig>,
    ) -> (Option<ClientError>, Option<NodeEvent>) {
        let epoch = membership.view_epoch();
        if self.epoch != epoch {
            self.epoch = epoch;
            self.verdicts.clear();
        }
        if let Some(cached) = self.verdicts.get(keyspace) {
            return (cached.clone(), None);
        }
        let Some(ours) = ours else {
            return (None, None);
        };
        let verdict = verdict(
            keyspace,
            ours,
            membership
                .member_keyspaces()
                .into_iter()
                .map(|(_, defs)| defs),
        );
        let event = match &verdict {
            Some(ClientError::ConfigMismatch {
                setting,
                ours,
                theirs,
                ..
            }) => Some(NodeEvent::ConfigMismatch {
                keyspace: keyspace.to_string(),
                detail: format!("{setting}: ours {ours}, cluster {theirs}"),
            }),
            _ => None,
        };
        self.verdicts.insert(keyspace.to_string(), verdict.clone());
        (verdict, event)
    }
}

/// Whether `ours` disagrees with most of the definitions of `keyspace` in
/// `members` (each member's gossiped keyspaces; this node counts for its
/// own); the error names the first setting that differs from the most
/// common other definition.
fn verdict<'a>(
    keyspace: &str,
    ours: &KeyspaceConfig,
    members: impl Iterator<Item = &'a [KeyspaceConfig]>,
) -> Option<ClientError> {
    let mut same = 1usize;
    let mut others: Vec<&KeyspaceConfig> = Vec::new();
    for defs in members {
        match defs.iter().find(|k| k.name == keyspace) {
            Some(k) if k == ours => same += 1,
            Some(k) => others.push(k),
            None => {}
        }
    }
    if same * 2 > same + others.len() {
        return None;
    }
    // The most common other definition is "the cluster's".
    let theirs = others
        .iter()
        .max_by_key(|k| others.iter().filter(|o| o == k).count())?;
    let (setting, a, b) = if theirs.replication_factor != ours.replication_factor {
        (
            "replication_factor",
            ours.replication_factor.to_string(),
            theirs.replication_factor.to_string(),
        )
    } else if theirs.replication() != ours.replication() {
        (
            "replication",
            ours.replication().to_string(),
            theirs.replication().to_string(),
        )
    } else if theirs.default_consistency != ours.default_consistency {
        (
            "default_consistency",
            ours.default_consistency.to_string(),
            theirs.default_consistency.to_string(),
        )
    } else {
        (
            "strategy",
            format!("{:?}", ours.strategy),
            format!("{:?}", theirs.strategy),
        )
    };
    Some(ClientError::ConfigMismatch {
        keyspace: keyspace.to_string(),
        setting: setting.to_string(),
        ours: a,
        theirs: b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Consistency;

    fn users(rf: usize, level: Consistency) -> Vec<KeyspaceConfig> {
        vec![KeyspaceConfig {
            name: "users".to_string(),
            replication_factor: rf,
            default_consistency: level,
            strategy: Default::default(),
            datacenters: Default::default(),
            spread_racks: false,
        }]
    }

    #[test]
    fn a_definition_differing_from_most_owners_is_a_mismatch() {
        let ours = &users(3, Consistency::Quorum)[0];
        let theirs = users(5, Consistency::Quorum);
        let members = [theirs.as_slice(), theirs.as_slice()];
        assert_eq!(
            verdict("users", ours, members.into_iter()),
            Some(ClientError::ConfigMismatch {
                keyspace: "users".to_string(),
                setting: "replication_factor".to_string(),
                ours: "3".to_string(),
                theirs: "5".to_string(),
            })
        );
    }

    #[test]
    fn the_first_differing_setting_is_named() {
        let ours = &users(3, Consistency::Quorum)[0];
        let theirs = users(3, Consistency::One);
        let members = [theirs.as_slice(), theirs.as_slice()];
        assert_eq!(
            verdict("users", ours, members.into_iter()),
            Some(ClientError::ConfigMismatch {
                keyspace: "users".to_string(),
                setting: "default_consistency".to_string(),
                ours: "QUORUM".to_string(),
                theirs: "ONE".to_string(),
            })
        );
    }

    #[test]
    fn a_definition_most_owners_share_agrees() {
        let ours_list = users(3, Consistency::Quorum);
        let other = users(5, Consistency::Quorum);
        // Us and one peer against one: a majority agrees with us.
        let members = [ours_list.as_slice(), other.as_slice()];
        assert_eq!(verdict("users", &ours_list[0], members.into_iter()), None);
        // Peers that do not gossip the keyspace do not count.
        let none: Vec<KeyspaceConfig> = Vec::new();
        let members = [none.as_slice(), none.as_slice()];
        assert_eq!(verdict("users", &ours_list[0], members.into_iter()), None);
    }

    #[test]
    fn a_tie_is_a_mismatch() {
        // Us against one peer: no majority for our definition.
        let ours = &users(3, Consistency::Quorum)[0];
        let theirs = users(5, Consistency::Quorum);
        let members = [theirs.as_slice()];
        assert!(verdict("users", ours, members.into_iter()).is_some());
    }
}
