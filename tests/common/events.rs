//! Events of an account's whole life as the lifecycle tests write them (a `type` field read by
//! [`LIFECYCLE`]'s flags), and the account each event leaves behind.
#![allow(dead_code)]

use account_sync::devtools::emulator::{Profile, UserCall};

/// What an event asks, as the test writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Update,
    Delete,
}

/// Flags that tell kinds by the events' `type` field, and make deletions.
pub const LIFECYCLE: &[&str] = &[
    "--event-type-pointer",
    "/type",
    "--update-types",
    "update",
    "--delete-types",
    "delete",
    "--apply-deletes",
];

pub fn payload(user: &str, kind: Kind, nick: &str) -> Vec<u8> {
    let t = match kind {
        Kind::Create => "create",
        Kind::Update => "update",
        Kind::Delete => "delete",
    };
    serde_json::json!({"type": t, "UserID": user, "Nick": nick})
        .to_string()
        .into_bytes()
}

/// The account each event leaves behind, applied in order from `start`: `None` = no account.
pub fn states(start: Option<Profile>, events: &[(Kind, String)]) -> Vec<Option<Profile>> {
    let mut state = start;
    let mut out = Vec::with_capacity(events.len());
    for (kind, nick) in events {
        let profile = Profile {
            nick: Some(nick.clone()),
            face_url: None,
        };
        state = match kind {
            Kind::Create if state.is_some() => state,
            Kind::Create | Kind::Update => Some(profile),
            Kind::Delete => None,
        };
        out.push(state.clone());
    }
    out
}

/// The account after `call`, from the account before it.
pub fn after(state: &Option<Profile>, call: &UserCall) -> Option<Option<Profile>> {
    let set = |nick: &Option<String>, face_url: &Option<String>| Profile {
        nick: nick.clone(),
        face_url: face_url.clone(),
    };
    Some(match call {
        UserCall::Created { nick, face_url } => Some(set(nick, face_url)),
        UserCall::Overwritten { nick, face_url } => {
            let mut p = state.clone().unwrap_or_default();
            if nick.is_some() {
                p.nick = nick.clone();
            }
            if face_url.is_some() {
                p.face_url = face_url.clone();
            }
            Some(p)
        }
        UserCall::Deleted | UserCall::DeleteAbsent => None,
        // Reads and refusals change nothing.
        UserCall::Checked { .. } | UserCall::Unchanged | UserCall::Refused { .. } => return None,
    })
}

/// A record to produce: its key and payload.
pub type Keyed = (String, Vec<u8>);

/// Rounds of a stream that comes back after deletes and updates in every order.
pub const ROUNDS: [Kind; 8] = [
    Kind::Create,
    Kind::Update,
    Kind::Delete,
    Kind::Create,
    Kind::Update,
    Kind::Update,
    Kind::Delete,
    Kind::Update,
];

/// A stream of `rounds` (one event per user a round, some users sitting out every third
/// round from the second on, so their events fall differently into windows) for `users`, user
/// `i` on partition `i % partitions`: each user's events, and the records of each partition in
/// order.
pub struct Stream {
    /// Each user's events in order: its kind and the Nick it carries.
    pub events: std::collections::BTreeMap<String, Vec<(Kind, String)>>,
    /// `(partition, [(key, payload)])`, in the order to produce: round by round.
    pub records: Vec<(i32, Vec<Keyed>)>,
    /// Partitions of the stream: `records` holds this many entries a round.
    pub partitions: i32,
}

impl Stream {
    pub fn of(users: &[String], rounds: &[Kind], partitions: i32) -> Stream {
        let mut events: std::collections::BTreeMap<String, Vec<(Kind, String)>> =
            Default::default();
        let mut records = Vec::new();
        for (r, &kind) in rounds.iter().enumerate() {
            for p in 0..partitions {
                let batch = users
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i as i32 % partitions == p)
                    .filter(|(i, _)| !(r % 3 == 1 && i % 4 == 0))
                    .map(|(_, u)| {
                        let nick = format!("r{r}-{u}");
                        events
                            .entry(u.clone())
                            .or_default()
                            .push((kind, nick.clone()));
                        (u.clone(), payload(u, kind, &nick))
                    })
                    .collect();
                records.push((p, batch));
            }
        }
        Stream {
            events,
            records,
            partitions,
        }
    }

    /// Records in all.
    pub fn len(&self) -> usize {
        self.records.iter().map(|(_, r)| r.len()).sum()
    }

    /// Produces the stream; returns the end offset of each partition.
    pub async fn produce(
        &self,
        producer: &rdkafka::producer::FutureProducer,
        topic: &str,
    ) -> std::collections::BTreeMap<i32, i64> {
        self.produce_rounds(producer, topic, 0..usize::MAX).await
    }

    /// Produces the records of `rounds`; returns the end offset of each partition written.
    pub async fn produce_rounds(
        &self,
        producer: &rdkafka::producer::FutureProducer,
        topic: &str,
        rounds: std::ops::Range<usize>,
    ) -> std::collections::BTreeMap<i32, i64> {
        let per_round = self.partitions as usize;
        let mut offsets = Vec::new();
        let parts = self
            .records
            .iter()
            .enumerate()
            .filter(|(i, _)| rounds.contains(&(i / per_round)))
            .map(|(_, r)| r);
        for (p, batch) in parts {
            let records: Vec<(Option<&str>, Option<&[u8]>)> = batch
                .iter()
                .map(|(k, pl)| (Some(k.as_str()), Some(pl.as_slice())))
                .collect();
            offsets.extend(super::kafka::produce(producer, topic, Some(*p), &records).await);
        }
        super::kafka::ends(&offsets)
    }
}
