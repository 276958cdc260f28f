//! Change-event envelopes around the row the pointers read (`--input-envelope debezium`): what
//! each change asks of the account (create, update, delete) and the row to read it from; changes
//! that ask nothing are skipped with their reason.
//!
//! Debezium writes one change event per row change, in one of these forms (all JSON here):
//!
//! - the envelope `{"before":…,"after":…,"source":…,"op":"c",…}`; `op` is `c` (insert), `r`
//!   (snapshot read), `u` (update), `d` (delete), `t` (truncate) or `m` (logical decoding
//!   message);
//! - either of the above inside the JSON converter's `{"schema":…,"payload":…}` wrapper
//!   (`schemas.enable=true`);
//! - the row alone, flattened by the `ExtractNewRecordState` transform, with `__op` when it adds
//!   that field (`add.fields=op`) and `__deleted: "true"` for a rewritten delete
//!   (`delete.handling.mode=rewrite`);
//! - a tombstone (no payload) after each delete, for log compaction.
//!
//! Inserts and snapshot reads are creates, read from `after`; updates are updates, read from
//! `after` (with `before`, when the event has it, so the decoder can tell a change of the profile
//! from a change of other columns); deletes are deletes, read from `before` (a rewritten delete's
//! row is the deleted row). A flattened row without `__op` cannot say whether it was inserted or
//! updated; it is taken as a create, which costs an update only an `account_check` (the account
//! exists: `already_imported`).

use serde_json::{Map, Value};

use crate::domain::{EventKind, SkipReason};

/// The largest change event read: Kafka's default largest message (`message.max.bytes`). A
/// Debezium event carries its row twice and, with the schema wrapper, the table's schema too, so
/// it is larger than a signup event; it is still bounded, and a larger one is dead-lettered.
pub const MAX_CHANGE_EVENT_BYTES: usize = 1024 * 1024;

/// Why a payload is not a Debezium change event (the decoder's `DecodeError::NotDebezium`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Debezium change event: {0}")]
pub struct NotDebezium(pub String);

/// What a change event is to the worker.
#[derive(Debug, PartialEq)]
pub enum Change<'a> {
    /// A row whose account to create, update or delete: the fields for the pointers.
    Row {
        /// What the change asks of the account.
        kind: EventKind,
        /// The row the pointers read: `after`, or `before` for a delete.
        row: &'a Value,
        /// An update's row before the change, when the event carries it.
        before: Option<&'a Value>,
    },
    /// Nothing to do: a change that asks nothing of an account.
    Skip(SkipReason),
}

impl<'a> Change<'a> {
    fn row(kind: EventKind, row: &'a Value) -> Change<'a> {
        Change::Row {
            kind,
            row,
            before: None,
        }
    }
}

/// The change a parsed Debezium event (a JSON document) carries.
pub fn debezium(doc: &Value) -> Result<Change<'_>, NotDebezium> {
    let event = unwrap_schema(doc);
    let Value::Object(fields) = event else {
        return Err(not_debezium("the payload is not a JSON object"));
    };
    if is_envelope(fields) {
        envelope_change(fields)
    } else {
        flattened_change(event, fields)
    }
}

/// The payload of the JSON converter's `{"schema":…,"payload":…}` wrapper, or `doc` itself.
fn unwrap_schema(doc: &Value) -> &Value {
    match doc {
        Value::Object(m) if m.len() == 2 && m.contains_key("schema") => {
            m.get("payload").unwrap_or(doc)
        }
        _ => doc,
    }
}

/// An envelope has a string `op` beside at least one of the envelope's other fields; a flattened
/// row with a column named `op` has none of them.
fn is_envelope(fields: &Map<String, Value>) -> bool {
    matches!(fields.get("op"), Some(Value::String(_)))
        && ["before", "after", "source"]
            .iter()
            .any(|k| fields.contains_key(*k))
}

fn envelope_change(fields: &Map<String, Value>) -> Result<Change<'_>, NotDebezium> {
    let op = fields.get("op").and_then(Value::as_str).unwrap_or_default();
    let row_of = |field: &str| match fields.get(field) {
        Some(row @ Value::Object(_)) => Ok(row),
        _ => Err(not_debezium(format!(
            "op \"{op}\" has no \"{field}\" row object"
        ))),
    };
    match op {
        "c" | "r" => Ok(Change::row(EventKind::Create, row_of("after")?)),
        "u" => Ok(Change::Row {
            kind: EventKind::Update,
            row: row_of("after")?,
            before: row_of("before").ok(),
        }),
        "d" => Ok(Change::row(EventKind::Delete, row_of("before")?)),
        other => skip_for_op(other),
    }
}

fn flattened_change<'a>(
    row: &'a Value,
    fields: &Map<String, Value>,
) -> Result<Change<'a>, NotDebezium> {
    let deleted = match fields.get("__deleted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(other) => {
            return Err(not_debezium(format!(
                "__deleted is {other}, not \"true\" or \"false\""
            )))
        }
    };
    if deleted {
        return Ok(Change::row(EventKind::Delete, row));
    }
    match fields.get("__op") {
        None | Some(Value::Null) => Ok(Change::row(EventKind::Create, row)),
        Some(Value::String(op)) => match op.as_str() {
            "c" | "r" => Ok(Change::row(EventKind::Create, row)),
            "u" => Ok(Change::row(EventKind::Update, row)),
            "d" => Ok(Change::row(EventKind::Delete, row)),
            other => skip_for_op(other),
        },
        Some(other) => Err(not_debezium(format!("__op is {other}, not a string"))),
    }
}

/// The skip reason of an `op` that asks nothing of an account.
fn skip_for_op(op: &str) -> Result<Change<'static>, NotDebezium> {
    let reason = match op {
        "t" => SkipReason::Truncate,
        "m" => SkipReason::Message,
        _ => {
            // Bounded: the reason is a dead-letter header.
            let op: String = op.chars().take(16).collect();
            return Err(not_debezium(format!(
                "op \"{op}\" is not one of c, r, u, d, t, m"
            )));
        }
    };
    Ok(Change::Skip(reason))
}

fn not_debezium(why: impl Into<String>) -> NotDebezium {
    NotDebezium(why.into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn change(doc: &Value) -> Result<Change<'_>, NotDebezium> {
        debezium(doc)
    }

    fn row(kind: EventKind, row: &Value) -> Change<'_> {
        Change::row(kind, row)
    }

    #[test]
    fn each_op_asks_its_kind_of_the_row_it_names() {
        for op in ["c", "r"] {
            let doc = json!({"before": null, "after": {"id": 7}, "source": {}, "op": op});
            assert_eq!(change(&doc), Ok(row(EventKind::Create, &json!({"id": 7}))));
        }
        let update = json!({"before": {"id": 7, "n": "a"}, "after": {"id": 7, "n": "b"}, "source": {}, "op": "u"});
        assert_eq!(
            change(&update),
            Ok(Change::Row {
                kind: EventKind::Update,
                row: &json!({"id": 7, "n": "b"}),
                before: Some(&json!({"id": 7, "n": "a"})),
            })
        );
        let no_before = json!({"before": null, "after": {"id": 7}, "source": {}, "op": "u"});
        assert_eq!(
            change(&no_before),
            Ok(row(EventKind::Update, &json!({"id": 7})))
        );
        let delete = json!({"before": {"id": 7}, "after": null, "source": {}, "op": "d"});
        assert_eq!(
            change(&delete),
            Ok(row(EventKind::Delete, &json!({"id": 7})))
        );
    }

    #[test]
    fn truncates_and_messages_are_skipped_by_reason() {
        for (op, reason) in [("t", SkipReason::Truncate), ("m", SkipReason::Message)] {
            let doc = json!({"before": null, "after": null, "source": {}, "op": op});
            assert_eq!(change(&doc), Ok(Change::Skip(reason)), "{op}");
        }
    }

    #[test]
    fn the_schema_wrapper_is_unwrapped() {
        let doc = json!({"schema": {"type": "struct"}, "payload": {"after": {"id": "u1"}, "op": "c", "source": {}}});
        assert_eq!(
            change(&doc),
            Ok(row(EventKind::Create, &json!({"id": "u1"})))
        );
        let flat =
            json!({"schema": {"type": "struct"}, "payload": {"id": "u1", "__deleted": "false"}});
        assert_eq!(
            change(&flat),
            Ok(row(
                EventKind::Create,
                &json!({"id": "u1", "__deleted": "false"})
            ))
        );
    }

    #[test]
    fn flattened_rows_follow_their_added_fields() {
        let plain = json!({"id": "u1", "op": "not an envelope"});
        assert_eq!(
            change(&plain),
            Ok(row(EventKind::Create, &plain)),
            "a column named op"
        );
        for (extra, want) in [
            (json!({"__op": "c"}), Ok(EventKind::Create)),
            (
                json!({"__op": "r", "__deleted": "false"}),
                Ok(EventKind::Create),
            ),
            (json!({"__op": "u"}), Ok(EventKind::Update)),
            (
                json!({"__op": "d", "__deleted": "true"}),
                Ok(EventKind::Delete),
            ),
            (json!({"__deleted": true}), Ok(EventKind::Delete)),
            (json!({"__op": "t"}), Err(SkipReason::Truncate)),
        ] {
            let mut doc = json!({"id": "u1"});
            doc.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let got = change(&doc).unwrap();
            match want {
                Ok(kind) => assert_eq!(got, row(kind, &doc)),
                Err(reason) => assert_eq!(got, Change::Skip(reason)),
            }
        }
    }

    #[test]
    fn malformed_events_say_what_is_wrong() {
        let cases = [
            (json!([1, 2]), "not a JSON object"),
            (
                json!({"op": "c", "after": null, "source": {}}),
                "op \"c\" has no \"after\" row",
            ),
            (
                json!({"op": "d", "before": null, "source": {}}),
                "op \"d\" has no \"before\" row",
            ),
            (
                json!({"op": "x".repeat(100), "source": {}}),
                "is not one of",
            ),
            (json!({"id": "u1", "__op": 3}), "__op is 3"),
            (
                json!({"id": "u1", "__deleted": "yes"}),
                "__deleted is \"yes\"",
            ),
        ];
        for (doc, want) in cases {
            let err = change(&doc).unwrap_err().to_string();
            assert!(err.contains(want), "{doc}: {err}");
            assert!(err.len() < 200, "bounded: {err}");
        }
    }
}
