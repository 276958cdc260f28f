//! What an event asks of its user's account: create, update or delete ([`EventKind`]), and
//! whether the worker acts on it (ARCHITECTURE, "Event kinds and order per user").
//!
//! The kind of a plain event comes from the field `--event-type-pointer` names, by value lists;
//! without the pointer every event is a create (the worker's behaviour before event kinds). The
//! kind of a change event comes from its envelope (`super::envelope`). Either way deletes are
//! acted on only with `--apply-deletes`: deleting is destructive and cannot be undone, so without
//! it a delete is skipped and counted, never dead-lettered.

use serde_json::Value;

use crate::domain::{EventKind, SkipReason};

/// Why a typed event's type cannot be read: the event's fault (the decoder's `DecodeError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("no event type at JSON pointer {0}")]
    Missing(String),
    #[error("event type at JSON pointer {0} is not a string")]
    NotAString(String),
}

/// How the decoder tells an event's kind, and which kinds it acts on. Built once from
/// configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindRule {
    /// JSON pointer to the event's type (`--event-type-pointer`); `None`: every plain event is a
    /// create.
    pub pointer: Option<String>,
    /// Type values of creates (`--create-types`); `None`: every value in neither other list.
    /// With a list, a value in no list is skipped (`other_type`): a topic that also carries
    /// events of other kinds (logins, say) must not create accounts for them.
    pub create: Option<Vec<String>>,
    /// Type values of updates (`--update-types`).
    pub update: Vec<String>,
    /// Type values of deletes (`--delete-types`).
    pub delete: Vec<String>,
    /// Whether deletes are acted on (`--apply-deletes`); otherwise they are skipped.
    pub apply_deletes: bool,
    /// The kind of an event without a type (no pointer, the plain format, a CSV line): a create
    /// for the worker; `backfill --event-kind` for a file of users to update or delete.
    pub default: EventKind,
}

impl KindRule {
    /// Checks the settings; errors name the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.default == EventKind::Delete && !self.apply_deletes {
            return Err(
                "--event-kind delete needs --apply-deletes: deleting accounts cannot be undone"
                    .into(),
            );
        }
        let Some(pointer) = &self.pointer else {
            if self.create.is_some() || !self.update.is_empty() || !self.delete.is_empty() {
                return Err(
                    "--create-types, --update-types and --delete-types need --event-type-pointer"
                        .into(),
                );
            }
            return Ok(());
        };
        if !pointer.starts_with('/') {
            return Err(format!(
                "--event-type-pointer {pointer:?} is not a JSON pointer (it must start with '/', e.g. /type)"
            ));
        }
        let lists = [
            ("--create-types", self.create.as_deref().unwrap_or_default()),
            ("--update-types", &self.update),
            ("--delete-types", &self.delete),
        ];
        for (i, (flag, values)) in lists.iter().enumerate() {
            if values.iter().any(String::is_empty) {
                return Err(format!("{flag} has an empty value"));
            }
            for (other_flag, other) in &lists[i + 1..] {
                if let Some(v) = values.iter().find(|v| other.contains(v)) {
                    return Err(format!("{v:?} is in both {flag} and {other_flag}"));
                }
            }
        }
        Ok(())
    }

    /// The kind `doc` (a plain event) asks for, or why it is skipped.
    pub fn kind_in(&self, doc: &Value) -> Result<Result<EventKind, SkipReason>, TypeError> {
        let Some(pointer) = &self.pointer else {
            return Ok(self.admit(self.default));
        };
        let value = match doc.pointer(pointer) {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => return Err(TypeError::Missing(pointer.clone())),
            Some(_) => return Err(TypeError::NotAString(pointer.clone())),
        };
        let listed = |list: &[String]| list.iter().any(|v| v == value);
        let kind = if listed(&self.delete) {
            EventKind::Delete
        } else if listed(&self.update) {
            EventKind::Update
        } else {
            match &self.create {
                None => EventKind::Create,
                Some(create) if listed(create) => EventKind::Create,
                Some(_) => return Ok(Err(SkipReason::OtherType)),
            }
        };
        Ok(self.admit(kind))
    }

    /// `kind`, or the reason it is skipped: a delete while deletes are not applied.
    pub fn admit(&self, kind: EventKind) -> Result<EventKind, SkipReason> {
        match kind {
            EventKind::Delete if !self.apply_deletes => Err(SkipReason::Delete),
            kind => Ok(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn typed(create: Option<&[&str]>, apply_deletes: bool) -> KindRule {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        KindRule {
            pointer: Some("/type".into()),
            create: create.map(list),
            update: list(&["profile_changed", "renamed"]),
            delete: list(&["user_deleted"]),
            apply_deletes,
            default: EventKind::Create,
        }
    }

    #[test]
    fn without_a_pointer_every_event_is_a_create() {
        let rule = KindRule::default();
        assert_eq!(
            rule.kind_in(&json!({"type": "user_deleted"})),
            Ok(Ok(EventKind::Create))
        );
        assert_eq!(rule.validate(), Ok(()));
    }

    #[test]
    fn the_lists_name_the_kinds() {
        let rule = typed(None, true);
        for (t, want) in [
            ("user_deleted", Ok(EventKind::Delete)),
            ("renamed", Ok(EventKind::Update)),
            ("profile_changed", Ok(EventKind::Update)),
            ("signup", Ok(EventKind::Create)),
            ("login", Ok(EventKind::Create)),
        ] {
            assert_eq!(rule.kind_in(&json!({"type": t})), Ok(want), "{t}");
        }
        let listed = typed(Some(&["signup"]), true);
        assert_eq!(
            listed.kind_in(&json!({"type": "signup"})),
            Ok(Ok(EventKind::Create))
        );
        assert_eq!(
            listed.kind_in(&json!({"type": "login"})),
            Ok(Err(SkipReason::OtherType))
        );
    }

    #[test]
    fn deletes_are_skipped_unless_applied() {
        let rule = typed(None, false);
        assert_eq!(
            rule.kind_in(&json!({"type": "user_deleted"})),
            Ok(Err(SkipReason::Delete))
        );
        assert_eq!(rule.admit(EventKind::Delete), Err(SkipReason::Delete));
        assert_eq!(rule.admit(EventKind::Update), Ok(EventKind::Update));
    }

    #[test]
    fn a_missing_or_odd_type_is_the_event_s_fault() {
        let rule = typed(None, true);
        assert_eq!(
            rule.kind_in(&json!({"UserID": "u"})),
            Err(TypeError::Missing("/type".into()))
        );
        assert_eq!(
            rule.kind_in(&json!({"type": 3})),
            Err(TypeError::NotAString("/type".into()))
        );
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let mut rule = typed(None, true);
        rule.update.push("user_deleted".into());
        assert!(rule
            .validate()
            .unwrap_err()
            .contains("--update-types and --delete-types"));
        let mut no_pointer = typed(None, true);
        no_pointer.pointer = None;
        assert!(no_pointer
            .validate()
            .unwrap_err()
            .contains("--event-type-pointer"));
        let mut relative = typed(None, true);
        relative.pointer = Some("type".into());
        assert!(relative.validate().unwrap_err().contains("JSON pointer"));
        assert_eq!(typed(Some(&["signup"]), false).validate(), Ok(()));
        let deletes_all = KindRule {
            default: EventKind::Delete,
            ..KindRule::default()
        };
        assert!(deletes_all
            .validate()
            .unwrap_err()
            .contains("--apply-deletes"));
    }
}
