//! The members' leases as read from the coordination topic, and the view of them every member
//! agrees on.
//!
//! A member publishes a [`Lease`] every interval. To compute the same split, every member looks at
//! the table *as of the same instant*: at each boundary (a multiple of the interval on the wall
//! clock) it takes, for every member, the newest lease sent at or before the cutoff (the boundary
//! minus one interval, time enough for a lease to reach everybody). A lease is live at the cutoff
//! until `sent_at + lease`; a member that left cleanly published a tombstone and is gone from the
//! next cutoff on.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// The rate-limited APIs a demand is published for, in [`Demand`] order.
pub const APIS: [crate::chat::Api; 4] = [
    crate::chat::Api::AccountCheck,
    crate::chat::Api::AccountImport,
    crate::chat::Api::MultiaccountImport,
    crate::chat::Api::AccountDelete,
];

/// Calls per second a member wants of each API of [`APIS`].
pub type Demand = [f64; APIS.len()];

/// A lease's demand as published: [`APIS`] in order. A member of an older version publishes the
/// first three only (it has no delete stage): its delete demand is 0, so a rolling upgrade
/// keeps sharing the budget.
fn demand_of_any_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Demand, D::Error> {
    let published: Vec<f64> = Deserialize::deserialize(d)?;
    if !(3..=APIS.len()).contains(&published.len()) {
        return Err(serde::de::Error::invalid_length(
            published.len(),
            &"3 or 4 demands",
        ));
    }
    Ok(std::array::from_fn(|k| {
        published.get(k).copied().unwrap_or(0.0)
    }))
}

/// One member's claim, as published on the coordination topic (JSON, keyed by member id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The publishing member (also the record key).
    pub member: String,
    /// When it was sent, ms since the Unix epoch (the sender's wall clock).
    pub sent_at_ms: u64,
    /// How long it stays valid after `sent_at_ms`, ms.
    pub lease_ms: u64,
    /// Calls/s wanted: `account_check`, `account_import`, `multiaccount_import`,
    /// `account_delete`.
    #[serde(deserialize_with = "demand_of_any_version")]
    pub demand: Demand,
}

/// What a member published last before some instant.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Lease(Lease),
    /// The member left cleanly (a tombstone, sent at this time).
    Gone {
        sent_at_ms: u64,
    },
}

impl Entry {
    fn sent_at_ms(&self) -> u64 {
        match self {
            Entry::Lease(l) => l.sent_at_ms,
            Entry::Gone { sent_at_ms } => *sent_at_ms,
        }
    }
}

/// Entries kept per member: enough to look back one cutoff at the publishing interval.
const KEPT_PER_MEMBER: usize = 16;

/// Every member's recent entries, in the order they were read.
#[derive(Debug, Default)]
pub struct LeaseTable {
    members: BTreeMap<String, VecDeque<Entry>>,
}

impl LeaseTable {
    /// A lease was read.
    pub fn insert(&mut self, lease: Lease) {
        let member = lease.member.clone();
        self.push(member, Entry::Lease(lease));
    }

    /// A tombstone was read: `member` left at `sent_at_ms` (the record's timestamp).
    pub fn remove(&mut self, member: &str, sent_at_ms: u64) {
        self.push(member.to_string(), Entry::Gone { sent_at_ms });
    }

    fn push(&mut self, member: String, entry: Entry) {
        let q = self.members.entry(member).or_default();
        q.push_back(entry);
        while q.len() > KEPT_PER_MEMBER {
            q.pop_front();
        }
    }

    /// The live members as of `cutoff_ms`, sorted by id, with their demands: for each member the
    /// newest entry sent at or before the cutoff, if it is a lease still valid then.
    pub fn live_at(&self, cutoff_ms: u64) -> Vec<(&str, Demand)> {
        self.members
            .iter()
            .filter_map(|(id, q)| {
                let newest = q
                    .iter()
                    .filter(|e| e.sent_at_ms() <= cutoff_ms)
                    .max_by_key(|e| e.sent_at_ms())?;
                match newest {
                    Entry::Lease(l) if l.sent_at_ms + l.lease_ms > cutoff_ms => {
                        Some((id.as_str(), l.demand))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// When `member`'s newest entry was sent (for "have my own leases come back?").
    pub fn last_sent_ms(&self, member: &str) -> Option<u64> {
        self.members
            .get(member)
            .and_then(|q| q.iter().map(Entry::sent_at_ms).max())
    }

    /// Forgets members whose newest entry is older than `before_ms` (long-gone members of a topic
    /// that is never compacted, as on the test broker).
    pub fn prune(&mut self, before_ms: u64) {
        self.members
            .retain(|_, q| q.iter().any(|e| e.sent_at_ms() >= before_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(member: &str, sent_at_ms: u64, check: f64) -> Lease {
        Lease {
            member: member.into(),
            sent_at_ms,
            lease_ms: 2_000,
            demand: [check, 0.0, 0.0, 0.0],
        }
    }

    #[test]
    fn every_member_is_seen_as_of_the_cutoff_not_as_of_now() {
        let mut t = LeaseTable::default();
        t.insert(lease("a", 1_000, 10.0));
        t.insert(lease("a", 1_250, 20.0));
        t.insert(lease("b", 1_100, 5.0));
        // A lease sent after the cutoff is not used yet: others may not have read it.
        t.insert(lease("c", 1_300, 99.0));
        assert_eq!(
            t.live_at(1_250),
            vec![("a", [20.0, 0.0, 0.0, 0.0]), ("b", [5.0, 0.0, 0.0, 0.0])]
        );
        assert_eq!(
            t.live_at(1_200),
            vec![("a", [10.0, 0.0, 0.0, 0.0]), ("b", [5.0, 0.0, 0.0, 0.0])]
        );
        assert_eq!(t.live_at(1_300).len(), 3);
    }

    #[test]
    fn an_expired_lease_releases_its_member_and_a_tombstone_removes_it_from_its_time_on() {
        let mut t = LeaseTable::default();
        t.insert(lease("a", 1_000, 10.0));
        t.insert(lease("b", 1_000, 10.0));
        t.remove("b", 1_500);
        assert_eq!(t.live_at(1_400).len(), 2);
        assert_eq!(t.live_at(1_500), vec![("a", [10.0, 0.0, 0.0, 0.0])]);
        // a's lease (2 s) has run out.
        assert!(t.live_at(3_000).is_empty());
        assert_eq!(t.last_sent_ms("b"), Some(1_500));
    }

    #[test]
    fn prune_forgets_long_gone_members_only() {
        let mut t = LeaseTable::default();
        t.insert(lease("old", 1_000, 1.0));
        t.insert(lease("new", 9_000, 1.0));
        t.prune(5_000);
        assert_eq!(t.last_sent_ms("old"), None);
        assert_eq!(t.last_sent_ms("new"), Some(9_000));
    }

    #[test]
    fn a_lease_is_json_with_named_fields() {
        let l = lease("m-1", 42, 1.5);
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(
            json,
            r#"{"member":"m-1","sent_at_ms":42,"lease_ms":2000,"demand":[1.5,0.0,0.0,0.0]}"#
        );
        assert_eq!(serde_json::from_str::<Lease>(&json).unwrap(), l);
    }

    #[test]
    fn a_lease_of_a_version_without_deletes_reads_with_no_delete_demand() {
        let older = r#"{"member":"m-1","sent_at_ms":42,"lease_ms":2000,"demand":[1.5,2.0,3.0]}"#;
        let l: Lease = serde_json::from_str(older).unwrap();
        assert_eq!(l.demand, [1.5, 2.0, 3.0, 0.0]);
        let odd = r#"{"member":"m-1","sent_at_ms":42,"lease_ms":2000,"demand":[1.5]}"#;
        assert!(serde_json::from_str::<Lease>(odd).is_err());
    }
}
