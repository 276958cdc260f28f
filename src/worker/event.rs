//! Input records → [`AccountEvent`], or a [`DecodeError`] that says exactly what is wrong.
//!
//! The layers of a record, outside in: the registry's framing and the writer schema (registry
//! formats, see [`super::schemas`]), the change-event envelope (see [`super::envelope`]), then the
//! row the pointers read.
//!
//! A record that does not decode is dead-lettered at stage `decode` with the error's text as the
//! reason; it never stops its partition. Every check the vendor would make on a UserID, Nick or
//! FaceUrl is made here first, so a bad event costs no API call.
//!
//! When every pointer names a top-level field (the default `/UserID`, `/Nick`, `/FaceUrl`), the
//! payload is read in one pass without building a document: the three fields are borrowed from
//! the payload and everything else is skipped. Other pointers go through a [`Value`]. Both paths
//! give the same result for every input (a test compares them).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::envelope::{self, Change, MAX_CHANGE_EVENT_BYTES};
use super::kinds::{KindRule, TypeError};
use super::schemas::SchemaCache;
use crate::chat::api::{self, MAX_PROFILE_FIELD_BYTES, MAX_USER_ID_BYTES};
pub use crate::domain::AccountEvent;
use crate::domain::{EventKind, SkipReason};
use crate::registry::wire::{self, WireError};

/// Payloads above this are rejected without parsing: a signup event is a few hundred bytes, and a
/// huge payload must not cost a huge allocation.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

impl AccountEvent {
    /// An event from fields found elsewhere than in JSON (a CSV row), checked as a decoded
    /// payload is: the UserID like [`InputFormat::Plain`] (trimmed of ASCII whitespace), Nick and
    /// FaceUrl as the optional JSON fields (`None` or `""` = not given, at most 500 bytes).
    pub fn from_fields(
        user_id: &str,
        nick: Option<&str>,
        face_url: Option<&str>,
        kind: EventKind,
    ) -> Result<AccountEvent, DecodeError> {
        let user_id = validate_user_id(user_id.trim_matches(|c: char| c.is_ascii_whitespace()))?;
        let text = |field, v: Option<&str>| match v {
            None => Ok(None),
            Some(s) => profile_text(field, s),
        };
        Ok(AccountEvent {
            user_id: user_id.to_owned(),
            nick: text("Nick", nick)?,
            face_url: text("FaceUrl", face_url)?,
            kind,
        })
    }
}

/// How payloads are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// JSON object; fields found by JSON pointer.
    Json,
    /// The payload (trimmed of surrounding ASCII whitespace) is the UserID.
    Plain,
    /// Avro in the Schema Registry's wire format: read with its writer schema into a document.
    Avro,
    /// Protobuf in the Schema Registry's wire format (the message index path after the id): read
    /// with its `.proto` into a document with the `.proto`'s field names.
    Protobuf,
    /// JSON in the Schema Registry's wire format (a JSON Schema's id before it).
    JsonSchema,
}

impl InputFormat {
    /// Whether records are framed for a Schema Registry.
    pub fn uses_registry(self) -> bool {
        matches!(
            self,
            InputFormat::Avro | InputFormat::Protobuf | InputFormat::JsonSchema
        )
    }
}

/// What wraps the row the pointers read (`--input-envelope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// The payload is the signup.
    None,
    /// A Debezium change event ([`super::envelope`]): inserts are signups, the rest is skipped.
    Debezium,
}

/// What a record is to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event: what to make true of its user's account.
    Event(AccountEvent),
    /// A well-formed record that asks nothing (a truncate, an update of other columns, a delete
    /// while deletes are not applied): only marked done, and counted by reason.
    Skipped(SkipReason),
    /// A framed record whose writer schema, this id, has not been looked up yet: the caller
    /// looks it up into the decoder's cache and decodes the record again.
    AwaitsSchema(u32),
}

/// Why a record was not decoded. The `Display` text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no payload (tombstone)")]
    Tombstone,
    #[error("payload is {0} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("change event is {0} bytes, over the {MAX_CHANGE_EVENT_BYTES}-byte limit")]
    ChangeEventTooLarge(usize),
    #[error("{0}")]
    NotDebezium(#[from] envelope::NotDebezium),
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The writer schema cannot be had or used (the text names the id).
    #[error("{0}")]
    Schema(String),
    #[error("payload does not decode with schema id {id}: {reason}")]
    NotInSchema { id: u32, reason: String },
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("no UserID at JSON pointer {0}")]
    MissingUserId(String),
    #[error("{0}")]
    EventType(#[from] TypeError),
    #[error("{field} at JSON pointer {pointer} is not a string")]
    NotAString {
        field: &'static str,
        pointer: String,
    },
    #[error("UserID is empty")]
    EmptyUserId,
    #[error("UserID is {0} bytes, over the {MAX_USER_ID_BYTES}-byte limit")]
    UserIdTooLong(usize),
    #[error("UserID contains characters outside [A-Za-z0-9_-]")]
    UserIdCharacters,
    #[error("{field} is {len} bytes, over the {MAX_PROFILE_FIELD_BYTES}-byte limit")]
    FieldTooLong { field: &'static str, len: usize },
}

/// Decodes payloads in one format. Built once from configuration.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Payload layout.
    format: InputFormat,
    /// What wraps the row (not with the plain format).
    envelope: Envelope,
    /// The writer schemas of the registry formats, shared with the lookups that fill it.
    schemas: Option<Arc<SchemaCache>>,
    /// JSON pointer to the UserID (json format only).
    user_id_pointer: String,
    /// JSON pointer to the optional Nick.
    nick_pointer: String,
    /// JSON pointer to the optional FaceUrl.
    face_url_pointer: String,
    /// The top-level keys the three pointers name, when each names one (the one-pass path,
    /// taken only when every event is a create: the event type is read from a document).
    top_level: Option<[String; 3]>,
    /// What kind each event is, and which kinds are acted on.
    kinds: KindRule,
}

/// The object key an RFC 6901 pointer names when it has exactly one reference token.
fn top_level_key(pointer: &str) -> Option<String> {
    let token = pointer.strip_prefix('/')?;
    (!token.contains('/')).then(|| token.replace("~1", "/").replace("~0", "~"))
}

impl Decoder {
    /// A decoder; pointers must be RFC 6901 JSON pointers (empty, or starting with `/`).
    pub fn new(
        format: InputFormat,
        user_id: &str,
        nick: &str,
        face_url: &str,
    ) -> Result<Self, String> {
        for (flag, p) in [
            ("--user-id-pointer", user_id),
            ("--nick-pointer", nick),
            ("--face-url-pointer", face_url),
        ] {
            if !p.starts_with('/') {
                return Err(format!(
                    "{flag} {p:?} is not a JSON pointer (it must start with '/', e.g. /UserID)"
                ));
            }
        }
        let top_level = match (
            top_level_key(user_id),
            top_level_key(nick),
            top_level_key(face_url),
        ) {
            (Some(u), Some(n), Some(f)) => Some([u, n, f]),
            _ => None,
        };
        Ok(Decoder {
            format,
            envelope: Envelope::None,
            schemas: None,
            user_id_pointer: user_id.to_owned(),
            nick_pointer: nick.to_owned(),
            face_url_pointer: face_url.to_owned(),
            top_level,
            kinds: KindRule::default(),
        })
    }

    /// The default JSON decoder: `/UserID`, `/Nick`, `/FaceUrl`.
    pub fn json_default() -> Self {
        Decoder::new(InputFormat::Json, "/UserID", "/Nick", "/FaceUrl")
            .expect("static pointers are valid")
    }

    /// This decoder reading the row inside `envelope`; the plain format has no envelope.
    pub fn with_envelope(self, envelope: Envelope) -> Result<Self, String> {
        if envelope != Envelope::None && self.format == InputFormat::Plain {
            return Err(
                "--input-envelope debezium needs a structured --input-format (json, avro, protobuf or json-schema)"
                    .into(),
            );
        }
        Ok(Decoder { envelope, ..self })
    }

    /// This decoder telling event kinds by `kinds` (checked; errors name the flag). A typed
    /// event needs a structured format, and its type is read from a document.
    pub fn with_kinds(self, kinds: KindRule) -> Result<Self, String> {
        kinds.validate()?;
        if kinds.pointer.is_some() && self.format == InputFormat::Plain {
            return Err("--event-type-pointer needs a structured --input-format".into());
        }
        let top_level = self.top_level.filter(|_| kinds.pointer.is_none());
        Ok(Decoder {
            kinds,
            top_level,
            ..self
        })
    }

    /// This decoder reading the registry formats' writer schemas from `schemas`.
    pub fn with_schemas(self, schemas: Arc<SchemaCache>) -> Self {
        Decoder {
            schemas: Some(schemas),
            ..self
        }
    }

    /// Decodes one Kafka record's payload (`None` = tombstone): its framing and writer schema,
    /// its envelope, its row.
    pub fn decode_record(&self, payload: Option<&[u8]>) -> Result<Decoded, DecodeError> {
        let Some(payload) = payload else {
            return match self.envelope {
                Envelope::None => Err(DecodeError::Tombstone),
                Envelope::Debezium => Ok(Decoded::Skipped(SkipReason::Tombstone)),
            };
        };
        let bound = match self.envelope {
            Envelope::None => MAX_PAYLOAD_BYTES,
            Envelope::Debezium => MAX_CHANGE_EVENT_BYTES,
        };
        if payload.len() > bound {
            return Err(match self.envelope {
                Envelope::None => DecodeError::TooLarge(payload.len()),
                Envelope::Debezium => DecodeError::ChangeEventTooLarge(payload.len()),
            });
        }
        match (self.format, self.envelope) {
            (f, _) if f.uses_registry() => self.decode_framed(payload),
            // The plain format has neither envelope nor type.
            (_, Envelope::None) if self.kinds.pointer.is_none() => {
                self.decode(Some(payload)).map(|e| self.admitted(e))
            }
            _ => self.decode_json_document(payload),
        }
    }

    /// An event without a type (of the rule's default kind), or why it is skipped.
    fn admitted(&self, event: AccountEvent) -> Decoded {
        match self.kinds.admit(event.kind) {
            Ok(_) => Decoded::Event(event),
            Err(skip) => Decoded::Skipped(skip),
        }
    }

    /// A framed record: its writer schema from the cache, then the document in it.
    fn decode_framed(&self, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let framed = wire::frame(payload)?;
        let id = framed.schema_id;
        let schemas = self
            .schemas
            .as_ref()
            .expect("a decoder of a registry format is built with its schema cache");
        let Some(entry) = schemas.get(id) else {
            return Ok(Decoded::AwaitsSchema(id));
        };
        let compiled = entry.map_err(DecodeError::Schema)?;
        match compiled.document(framed.body) {
            Some(doc) => {
                let doc = doc.map_err(|reason| DecodeError::NotInSchema { id, reason })?;
                self.decoded_in(&doc, IdValues::StringOrInteger)
            }
            // JSON Schema: the body is the JSON the other paths read.
            None if self.envelope == Envelope::None && self.kinds.pointer.is_none() => {
                self.decode_json(framed.body).map(|e| self.admitted(e))
            }
            None => self.decode_json_document(framed.body),
        }
    }

    /// A JSON payload parsed whole, then read as [`Self::decoded_in`] does.
    fn decode_json_document(&self, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
        let doc: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        self.decoded_in(&doc, IdValues::String)
    }

    /// What a parsed document is: inside a change-event envelope, the event of its row or why
    /// it is skipped; else the event the pointers find, of the kind its type says.
    fn decoded_in(&self, doc: &Value, ids: IdValues) -> Result<Decoded, DecodeError> {
        match self.envelope {
            Envelope::None => match self.kinds.kind_in(doc)? {
                Ok(kind) => self.event_in(doc, ids, kind).map(Decoded::Event),
                Err(skip) => Ok(Decoded::Skipped(skip)),
            },
            Envelope::Debezium => match envelope::debezium(doc)? {
                Change::Skip(reason) => Ok(Decoded::Skipped(reason)),
                Change::Row { kind, row, before } => {
                    if let Err(skip) = self.kinds.admit(kind) {
                        return Ok(Decoded::Skipped(skip));
                    }
                    // A table's key is often a number; its decimal digits are the UserID.
                    let event = self.event_in(row, IdValues::StringOrInteger, kind)?;
                    match before {
                        Some(before) if !self.profile_changed(before, &event) => {
                            Ok(Decoded::Skipped(SkipReason::Unchanged))
                        }
                        _ => Ok(Decoded::Event(event)),
                    }
                }
            },
        }
    }

    /// Whether an update changed what the worker writes: the Nick or FaceUrl the pointers read
    /// in the row before it. A `before` row that does not read (a field of another type) counts
    /// as changed: the update is made rather than dropped.
    fn profile_changed(&self, before: &Value, after: &AccountEvent) -> bool {
        let nick = optional_field(before, "Nick", &self.nick_pointer);
        let face_url = optional_field(before, "FaceUrl", &self.face_url_pointer);
        !matches!((nick, face_url), (Ok(n), Ok(f)) if n == after.nick && f == after.face_url)
    }

    /// Decodes one payload (`None` = tombstone) that is the signup itself, without envelope.
    pub fn decode(&self, payload: Option<&[u8]>) -> Result<AccountEvent, DecodeError> {
        let payload = payload.ok_or(DecodeError::Tombstone)?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        match self.format {
            InputFormat::Plain => {
                let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
                let user_id =
                    validate_user_id(text.trim_matches(|c: char| c.is_ascii_whitespace()))?;
                Ok(AccountEvent {
                    user_id: user_id.to_owned(),
                    nick: None,
                    face_url: None,
                    kind: self.kinds.default,
                })
            }
            InputFormat::Json => self.decode_json(payload),
            // Framed records go through decode_record (they may await a schema).
            InputFormat::Avro | InputFormat::Protobuf | InputFormat::JsonSchema => {
                match self.decode_record(Some(payload))? {
                    Decoded::Event(e) => Ok(e),
                    Decoded::Skipped(_) | Decoded::AwaitsSchema(_) => Err(DecodeError::Schema(
                        "a framed record read without its schema lookup".into(),
                    )),
                }
            }
        }
    }

    fn decode_json(&self, payload: &[u8]) -> Result<AccountEvent, DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
        match &self.top_level {
            // Only an object has fields; anything else takes the general path, which says why.
            Some(keys) if text.trim_start().starts_with('{') => self.decode_top_level(text, keys),
            _ => self.decode_document(text),
        }
    }

    /// The one-pass path: the three top-level fields, borrowed, the rest skipped.
    fn decode_top_level(
        &self,
        text: &str,
        keys: &[String; 3],
    ) -> Result<AccountEvent, DecodeError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = (FieldsSeed { keys })
            .deserialize(&mut de)
            .and_then(|f| de.end().map(|()| f))
            .map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let [user_id, nick, face_url] = fields;
        let user_id = match user_id {
            None | Some(Field::Null) => {
                return Err(DecodeError::MissingUserId(self.user_id_pointer.clone()))
            }
            Some(Field::Str(s)) => validate_user_id(&s)?.to_owned(),
            Some(Field::Other) => {
                return Err(DecodeError::NotAString {
                    field: "UserID",
                    pointer: self.user_id_pointer.clone(),
                })
            }
        };
        Ok(AccountEvent {
            user_id,
            nick: optional(nick, "Nick", &self.nick_pointer)?,
            face_url: optional(face_url, "FaceUrl", &self.face_url_pointer)?,
            kind: self.kinds.default,
        })
    }

    /// The general path: the whole document, then the pointers.
    fn decode_document(&self, text: &str) -> Result<AccountEvent, DecodeError> {
        // serde_json limits nesting depth (128), so hostile deep JSON is an error, not a stack overflow.
        let doc: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        self.event_in(&doc, IdValues::String, self.kinds.default)
    }

    /// The event of `kind` the pointers find in `doc`.
    fn event_in(
        &self,
        doc: &Value,
        ids: IdValues,
        kind: EventKind,
    ) -> Result<AccountEvent, DecodeError> {
        let integer;
        let user_id = match doc.pointer(&self.user_id_pointer) {
            None | Some(Value::Null) => {
                return Err(DecodeError::MissingUserId(self.user_id_pointer.clone()))
            }
            Some(Value::String(s)) => validate_user_id(s)?,
            Some(Value::Number(n))
                if ids == IdValues::StringOrInteger && (n.is_i64() || n.is_u64()) =>
            {
                integer = n.to_string();
                validate_user_id(&integer)?
            }
            Some(_) => {
                return Err(DecodeError::NotAString {
                    field: "UserID",
                    pointer: self.user_id_pointer.clone(),
                })
            }
        };
        let nick = optional_field(doc, "Nick", &self.nick_pointer)?;
        let face_url = optional_field(doc, "FaceUrl", &self.face_url_pointer)?;
        Ok(AccountEvent {
            user_id: user_id.to_owned(),
            nick,
            face_url,
            kind,
        })
    }
}

/// Which JSON values a UserID may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdValues {
    /// A string only: a signup event names its UserID.
    String,
    /// A string, or an integer read as its decimal digits: a table's key column.
    StringOrInteger,
}

fn validate_user_id(id: &str) -> Result<&str, DecodeError> {
    if id.is_empty() {
        return Err(DecodeError::EmptyUserId);
    }
    if id.len() > MAX_USER_ID_BYTES {
        return Err(DecodeError::UserIdTooLong(id.len()));
    }
    if !api::is_valid_user_id(id) {
        return Err(DecodeError::UserIdCharacters);
    }
    Ok(id)
}

/// An optional profile field given as a string: "" means not given; at most 500 bytes.
fn profile_text(field: &'static str, s: &str) -> Result<Option<String>, DecodeError> {
    if s.len() > MAX_PROFILE_FIELD_BYTES {
        return Err(DecodeError::FieldTooLong {
            field,
            len: s.len(),
        });
    }
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

/// A top-level field's value, as far as decoding cares.
enum Field<'a> {
    /// A string, borrowed from the payload unless it had escapes.
    Str(Cow<'a, str>),
    /// `null`.
    Null,
    /// Anything else (number, bool, array, object).
    Other,
}

/// An optional string field of the one-pass path: the same rules as [`optional_field`].
fn optional(
    value: Option<Field<'_>>,
    field: &'static str,
    pointer: &str,
) -> Result<Option<String>, DecodeError> {
    match value {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Str(s)) => profile_text(field, &s),
        Some(Field::Other) => Err(DecodeError::NotAString {
            field,
            pointer: pointer.to_owned(),
        }),
    }
}

/// Reads a JSON object, keeping the values of `keys` (the last one wins when a key repeats, as in
/// a parsed document) and skipping everything else.
struct FieldsSeed<'k> {
    keys: &'k [String; 3],
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = [Option<Field<'de>>; 3];

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = [Option<Field<'de>>; 3];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: [Option<Field<'de>>; 3] = [None, None, None];
        while let Some(hits) = map.next_key_seed(KeySeed { keys: self.keys })? {
            // The same key may be named by more than one pointer.
            let Some(first) = hits.iter().position(|&h| h) else {
                map.next_value::<Skip>()?;
                continue;
            };
            let value = map.next_value::<FieldValue<'de>>()?.0;
            for i in (first + 1..3).filter(|&i| hits[i]) {
                out[i] = Some(match &value {
                    Field::Str(s) => Field::Str(s.clone()),
                    Field::Null => Field::Null,
                    Field::Other => Field::Other,
                });
            }
            out[first] = Some(value);
        }
        Ok(out)
    }
}

/// An object key, compared with the wanted keys without being copied: which of them it is.
struct KeySeed<'k> {
    keys: &'k [String; 3],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = [bool; 3];

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = [bool; 3];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok([0, 1, 2].map(|i| self.keys[i] == v))
    }
}

/// A field value: a string kept (borrowed when possible), anything else classified and skipped.
struct FieldValue<'a>(Field<'a>);

impl<'de> de::Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Str(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Str(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Str(Cow::Owned(v))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Null))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Other))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Other))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Other))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(FieldValue(Field::Other))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor
            .visit_seq(seq)
            .map(|Skip| FieldValue(Field::Other))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor
            .visit_map(map)
            .map(|Skip| FieldValue(Field::Other))
    }
}

/// A value skipped without being kept. Unlike [`IgnoredAny`] (which serde_json skips without a
/// depth limit), it goes through `deserialize_any`, so nesting deeper than serde_json's recursion
/// limit is the same error as when parsing a whole document.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// An optional string field: absent, null and "" all mean "not given".
fn optional_field(
    doc: &Value,
    field: &'static str,
    pointer: &str,
) -> Result<Option<String>, DecodeError> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => profile_text(field, s),
        Some(_) => Err(DecodeError::NotAString {
            field,
            pointer: pointer.to_owned(),
        }),
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
