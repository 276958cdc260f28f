//! The writer schemas of registry formats (`--input-format avro|protobuf|json-schema`): looked up
//! by id once, compiled, kept; and a framed payload read with its schema into the document the
//! pointers read.
//!
//! A record whose schema is not in the cache is held by the intake loop while [`lookup`] asks the
//! registry (see `intake.rs`): ids are immutable, so each is asked for once per process. What the
//! registry answers decides the record's fate:
//!
//! - a schema: compiled and cached; the record decodes with it;
//! - "not found" (40403, or a reference's 40401/40402), a schema of another kind than the input
//!   format, a schema that does not compile or has an array of items that take no bytes (see
//!   `refuse_arrays_of_nothing`): cached as unreadable, and every record naming that
//!   id is dead-lettered at `decode` with the reason (the record's fault: it names a schema
//!   nobody can read it with);
//! - no usable answer (unreachable, timeout, 5xx, credentials refused, a broken answer): not the
//!   record's fault. The systemic gate closes (intake pauses, `/readyz` says "schema registry
//!   unavailable: …"), the lookup asks again with backoff, and the gate reopens when the registry
//!   answers. Nothing is dead-lettered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::headers::HeaderBuilder;
use apache_avro::types::Value as AvroValue;
use apache_avro::{GenericSingleObjectReader, Schema as AvroSchema};
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File as ProtoFile, FileResolver, GoogleFileResolver};
use protox::Compiler;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::envelope::MAX_CHANGE_EVENT_BYTES;
use super::source::Polled;
use crate::backoff::Backoff;
use crate::registry::wire;
use crate::registry::{RegisteredSchema, RegistryClient, RegistryError, SchemaKind};
use crate::shutdown::Shutdown;
use crate::systemic::{SystemicGate, MAX_OUTAGE_PROBE_INTERVAL};

/// The most schemas kept. A topic has a handful (one per version of its writers); the bound only
/// keeps a stream of records naming ever new ids from growing the process.
pub const MAX_CACHED_SCHEMAS: usize = 1000;

/// A writer schema ready to read records with.
#[derive(Debug)]
pub enum Compiled {
    /// An Avro schema, with the named schemas it references.
    Avro(Box<AvroReader>),
    /// A Protobuf file, with the files it imports.
    Protobuf(Box<ProtoReader>),
    /// A JSON Schema: the payload is JSON, read as it is (the producer's serializer validated it).
    Json,
}

/// An Avro writer schema, ready to read datums with.
#[derive(Debug)]
pub struct AvroReader {
    schema: AvroSchema,
    references: Vec<AvroSchema>,
    /// The schema with its named types resolved once, when it references no other schema: the
    /// per-record read then skips resolving them again (see [`AvroReader::document`]).
    resolved: Option<Resolved>,
}

/// A cache entry: a schema, or why records naming its id cannot be read.
pub type Entry = Result<Arc<Compiled>, String>;

/// The schemas looked up so far, by id, and the count of registry lookups (for the bench).
#[derive(Debug)]
pub struct SchemaCache {
    /// The input format's schema kind: a schema of another kind is unreadable.
    kind: SchemaKind,
    entries: RwLock<HashMap<u32, Entry>>,
    /// Lookups asked of the registry (one per schema id, plus the retries while it is down).
    lookups: AtomicU64,
}

impl SchemaCache {
    /// An empty cache for schemas of `kind`.
    pub fn new(kind: SchemaKind) -> Self {
        // apache-avro sizes a string, bytes or array by the length the payload claims, up to this
        // process-wide bound (512 MiB by default; the first setting wins). No claim can be
        // longer than the largest payload read.
        apache_avro::util::max_allocation_bytes(MAX_CHANGE_EVENT_BYTES);
        SchemaCache {
            kind,
            entries: RwLock::new(HashMap::new()),
            lookups: AtomicU64::new(0),
        }
    }

    /// The entry for `id`, if it was looked up.
    pub fn get(&self, id: u32) -> Option<Entry> {
        self.entries.read().expect("not poisoned").get(&id).cloned()
    }

    /// Keeps the entry for `id`; when full, one other entry goes (any: they are all cheap to ask
    /// for again).
    pub fn insert(&self, id: u32, entry: Entry) {
        let mut entries = self.entries.write().expect("not poisoned");
        if entries.len() >= MAX_CACHED_SCHEMAS && !entries.contains_key(&id) {
            if let Some(&other) = entries.keys().next() {
                entries.remove(&other);
            }
        }
        entries.insert(id, entry);
    }

    /// Registry lookups made so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// The schema a registry answer gives, compiled, or why it cannot be used.
    pub fn compile(&self, schema: &RegisteredSchema) -> Entry {
        let id = schema.id;
        if schema.kind != self.kind {
            return Err(format!(
                "schema id {id} is {}, not {} as the input format says",
                schema.kind.as_str(),
                self.kind.as_str()
            ));
        }
        let compiled = match schema.kind {
            SchemaKind::Avro => compile_avro(schema)
                .map_err(|e| format!("schema id {id} cannot be read as Avro: {e}"))?,
            SchemaKind::Json => Compiled::Json,
            SchemaKind::Protobuf => compile_protobuf(schema)
                .map_err(|e| format!("schema id {id} cannot be read as Protobuf: {e}"))?,
        };
        Ok(Arc::new(compiled))
    }
}

fn compile_avro(schema: &RegisteredSchema) -> Result<Compiled, String> {
    let references = schema.references.iter().map(|r| r.text.as_str());
    let (schema, references) =
        AvroSchema::parse_str_with_list(&schema.text, references).map_err(|e| e.to_string())?;
    let all: Vec<&AvroSchema> = references.iter().chain([&schema]).collect();
    let resolved =
        apache_avro::schema::ResolvedSchema::try_from(all.clone()).map_err(|e| e.to_string())?;
    for s in all {
        refuse_arrays_of_nothing(s, resolved.get_names(), 0)?;
    }
    // apache-avro resolves a schema's named types on every read of a datum; its single-object
    // reader resolves them once. With an empty header it reads a bare datum.
    let resolved = match references.is_empty() {
        true => GenericSingleObjectReader::new_with_header_builder(schema.clone(), NoHeader)
            .ok()
            .map(Resolved),
        false => None,
    };
    Ok(Compiled::Avro(Box::new(AvroReader {
        schema,
        references,
        resolved,
    })))
}

/// A schema whose named types are resolved, ready to read bare datums.
pub struct Resolved(GenericSingleObjectReader);

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolved")
    }
}

/// The single-object encoding's header, left out: registry-framed records carry none.
struct NoHeader;

impl HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// A Protobuf writer schema: the compiled file, whose messages the index path picks from.
#[derive(Debug)]
pub struct ProtoReader {
    file: FileDescriptor,
}

/// The name the schema's own file gets among the files it imports (theirs are the references'
/// names, which are import paths: none starts with this).
const PROTO_MAIN_FILE: &str = "account-sync/writer-schema.proto";

fn compile_protobuf(schema: &RegisteredSchema) -> Result<Compiled, String> {
    let mut files: HashMap<String, String> = schema
        .references
        .iter()
        .map(|r| (r.name.clone(), r.text.clone()))
        .collect();
    files.insert(PROTO_MAIN_FILE.into(), schema.text.clone());
    let mut resolver = ChainFileResolver::new();
    resolver.add(RegistryFiles(files));
    // The well-known types (google/protobuf/timestamp.proto…): serializers do not register them.
    resolver.add(GoogleFileResolver::new());
    let mut compiler = Compiler::with_file_resolver(resolver);
    compiler
        .open_file(PROTO_MAIN_FILE)
        .map_err(|e| bounded(&e.to_string()))?;
    let file = compiler
        .descriptor_pool()
        .get_file_by_name(PROTO_MAIN_FILE)
        .ok_or("the compiled file is missing")?;
    Ok(Compiled::Protobuf(Box::new(ProtoReader { file })))
}

/// The schema's file and its references, by name, for the compiler's imports.
struct RegistryFiles(HashMap<String, String>);

impl FileResolver for RegistryFiles {
    fn open_file(&self, name: &str) -> Result<ProtoFile, protox::Error> {
        match self.0.get(name) {
            Some(source) => ProtoFile::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl ProtoReader {
    /// The message at the record's index path, read into JSON with the `.proto`'s field names.
    fn document(&self, body: &[u8]) -> Result<Value, String> {
        let (path, message) = wire::message_indexes(body).map_err(|e| e.to_string())?;
        let desc = self.message_at(&path).ok_or_else(|| {
            // Bounded: the path may hold 32 indexes of 20 digits.
            let mut shown: Vec<String> = path.iter().take(4).map(usize::to_string).collect();
            if path.len() > 4 {
                shown.push("…".into());
            }
            format!(
                "the message index path [{}] names no message of the schema",
                shown.join(", ")
            )
        })?;
        let decoded = DynamicMessage::decode(desc, message).map_err(|e| bounded(&e.to_string()))?;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false);
        decoded
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| bounded(&e.to_string()))
    }

    /// The message an index path names: the file's top-level message at its first index, then
    /// nested messages.
    fn message_at(&self, path: &[usize]) -> Option<MessageDescriptor> {
        let (&first, rest) = path.split_first()?;
        let mut desc = self.file.messages().nth(first)?;
        for &i in rest {
            let child = desc.child_messages().nth(i)?;
            desc = child;
        }
        Some(desc)
    }
}

/// How deep [`refuse_arrays_of_nothing`] and [`takes_no_bytes`] follow a schema.
const MAX_SCHEMA_DEPTH: usize = 64;

/// Refuses a schema with an array whose items can take no bytes (`null`, a `fixed` of size 0, a
/// record of such fields): a record of it could claim billions of items in a few bytes, and the
/// decoder would build them all. No real schema has one.
fn refuse_arrays_of_nothing(
    schema: &AvroSchema,
    names: &apache_avro::schema::NamesRef<'_>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!("nested deeper than {MAX_SCHEMA_DEPTH}"));
    }
    let walk = |s: &AvroSchema| refuse_arrays_of_nothing(s, names, depth + 1);
    match schema {
        AvroSchema::Array(a) => {
            if takes_no_bytes(&a.items, names, 0) {
                return Err("it has an array of items that take no bytes (such as null), which a record could claim any number of".into());
            }
            walk(&a.items)
        }
        AvroSchema::Map(m) => walk(&m.types),
        AvroSchema::Union(u) => u.variants().iter().try_for_each(walk),
        AvroSchema::Record(r) => r.fields.iter().try_for_each(|f| walk(&f.schema)),
        _ => Ok(()),
    }
}

/// Whether a value of `schema` can be encoded in zero bytes.
fn takes_no_bytes(
    schema: &AvroSchema,
    names: &apache_avro::schema::NamesRef<'_>,
    depth: usize,
) -> bool {
    if depth > MAX_SCHEMA_DEPTH {
        return false;
    }
    match schema {
        AvroSchema::Null => true,
        AvroSchema::Fixed(f) => f.size == 0,
        AvroSchema::Record(r) => r
            .fields
            .iter()
            .all(|f| takes_no_bytes(&f.schema, names, depth + 1)),
        AvroSchema::Ref { name } => names
            .get(name)
            .is_some_and(|s| takes_no_bytes(s, names, depth + 1)),
        // Every other type writes at least one byte: a length, a count, an index, a number.
        _ => false,
    }
}

impl Compiled {
    /// The document in `body` (a framed payload's bytes after its schema id), or why it does not
    /// read; `None` for a JSON Schema payload, which the JSON path reads itself.
    pub fn document(&self, body: &[u8]) -> Option<Result<Value, String>> {
        match self {
            Compiled::Avro(avro) => Some(avro.document(body)),
            Compiled::Protobuf(proto) => Some(proto.document(body)),
            Compiled::Json => None,
        }
    }
}

impl AvroReader {
    /// The datum in `body`, as a document.
    fn document(&self, body: &[u8]) -> Result<Value, String> {
        let AvroReader {
            schema,
            references,
            resolved,
        } = self;
        let mut reader = body;
        let decoded = match resolved {
            Some(Resolved(r)) => r.read_value(&mut reader),
            None => {
                // The named types are resolved from the schemata given, in order: the references
                // (each after those it uses), then the schema, whose own named types count too.
                let schemata = references.iter().chain(std::iter::once(schema)).collect();
                apache_avro::from_avro_datum_schemata(schema, schemata, &mut reader, None)
            }
        };
        match decoded {
            Err(e) => Err(bounded(&e.to_string())),
            Ok(_) if !reader.is_empty() => {
                Err(format!("{} bytes left over after the record", reader.len()))
            }
            Ok(v) => Ok(to_json(v)),
        }
    }
}

/// An Avro value as the pointers read it: records and maps as objects, unions unwrapped, enums
/// as their symbol, bytes and fixed as arrays of numbers, a float that JSON cannot hold (NaN,
/// infinity) as null; the logical types as their underlying number or string.
fn to_json(v: AvroValue) -> Value {
    match v {
        AvroValue::Union(_, inner) => to_json(*inner),
        AvroValue::Record(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        AvroValue::Map(items) => {
            Value::Object(items.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        AvroValue::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        AvroValue::Float(f) => float(f64::from(f)),
        AvroValue::Double(d) => float(d),
        AvroValue::Uuid(u) => Value::String(u.to_string()),
        leaf => Value::try_from(leaf).unwrap_or(Value::Null),
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// An error text cut to a dead-letter reason's size.
fn bounded(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Where the intake loop looks up the writer schemas the decoder has not seen yet.
pub(super) struct SchemaLookups {
    /// The registry.
    pub client: RegistryClient,
    /// The cache the lookups fill and the decoder reads.
    pub cache: Arc<SchemaCache>,
}

impl SchemaLookups {
    /// Holds `record`, which names schema `id`, while a task looks the schema up (see
    /// [`lookup`]; `initial` is its first delay after a failure).
    pub fn hold(
        &self,
        record: Polled,
        id: u32,
        gate: Arc<SystemicGate>,
        initial: Duration,
    ) -> HeldForSchema {
        let (client, cache) = (self.client.clone(), self.cache.clone());
        let task = tokio::spawn(async move {
            // The task ends with the lookup, or is aborted with the hold (the loop stopping).
            lookup(&client, &cache, id, &gate, initial, &Shutdown::never()).await
        });
        HeldForSchema {
            record,
            id,
            task: AbortOnDrop(task),
            cache: self.cache.clone(),
        }
    }
}

/// A record held by the intake loop while its schema is looked up. The loop takes no other
/// record meanwhile, so records are decoded in their order; the lookup ends when dropped.
pub(super) struct HeldForSchema {
    /// The record, not yet counted as read (its offset is not tracked, so a revocation or a stop
    /// meanwhile leaves it to be read again).
    pub record: Polled,
    /// The schema it names.
    id: u32,
    /// The lookup.
    task: AbortOnDrop,
    /// Where the answer goes.
    cache: Arc<SchemaCache>,
}

impl HeldForSchema {
    /// Waits for the lookup and puts its answer in the cache; the record then decodes without
    /// waiting (or, if the lookup failed unexpectedly, asks again).
    pub async fn answered(&mut self) {
        match (&mut self.task.0).await {
            Ok(Some(entry)) => self.cache.insert(self.id, entry),
            Ok(None) => std::future::pending().await,
            Err(e) => tracing::error!(schema_id = self.id, error = %e, "schema lookup task failed"),
        }
    }
}

/// A lookup task that ends when its hold is dropped.
struct AbortOnDrop(JoinHandle<Option<Entry>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks the registry for schema `id` until it answers, then compiles what it answered: the entry
/// to cache. While the registry does not answer usably the gate is closed and the question asked
/// again after `initial`, doubling up to [`MAX_OUTAGE_PROBE_INTERVAL`]; the gate reopens on the
/// answer. `None` on shutdown.
pub async fn lookup(
    client: &RegistryClient,
    cache: &SchemaCache,
    id: u32,
    gate: &SystemicGate,
    initial: Duration,
    shutdown: &Shutdown,
) -> Option<Entry> {
    let backoff = Backoff::doubling(initial, MAX_OUTAGE_PROBE_INTERVAL);
    let mut delay = initial;
    let mut failed = false;
    loop {
        cache.lookups.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::select! {
            a = client.schema(id) => a,
            _ = shutdown.wait() => return None,
        };
        match answer {
            Ok(schema) => {
                if failed {
                    gate.clear_registry();
                }
                return Some(cache.compile(&schema));
            }
            Err(e @ RegistryError::NotFound(_)) => {
                if failed {
                    gate.clear_registry();
                }
                return Some(Err(e.to_string()));
            }
            Err(e @ RegistryError::Unavailable(_)) => {
                tracing::warn!(schema_id = id, error = %e, next_in = ?delay, "schema lookup failed; asking again");
                gate.report_registry(e.to_string());
                failed = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => return None,
        }
        delay = backoff.after(delay);
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Record;

    use super::*;
    use crate::registry::Referenced;

    const USER: &str = r#"{"type":"record","name":"Signup","namespace":"app","fields":[
        {"name":"user_id","type":"string"},
        {"name":"nick","type":["null","string"],"default":null},
        {"name":"score","type":"double"},
        {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["FREE","PRO"]}}]}"#;

    fn registered(kind: SchemaKind, text: &str, references: Vec<Referenced>) -> RegisteredSchema {
        RegisteredSchema {
            id: 7,
            kind,
            text: text.into(),
            references,
        }
    }

    #[test]
    fn an_avro_record_reads_as_a_document() {
        let cache = SchemaCache::new(SchemaKind::Avro);
        let compiled = cache
            .compile(&registered(SchemaKind::Avro, USER, vec![]))
            .unwrap();
        let schema = AvroSchema::parse_str(USER).unwrap();
        let mut r = Record::new(&schema).unwrap();
        r.put("user_id", "u1");
        r.put("nick", AvroValue::Union(1, Box::new("Ann".into())));
        r.put("score", f64::NAN);
        r.put("kind", AvroValue::Enum(1, "PRO".into()));
        let body = apache_avro::to_avro_datum(&schema, r).unwrap();
        let doc = compiled.document(&body).unwrap().unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"user_id": "u1", "nick": "Ann", "score": null, "kind": "PRO"})
        );
        // Cut short, or with bytes left over: the payload is not this schema's record.
        assert!(compiled.document(&body[..body.len() - 3]).unwrap().is_err());
        let mut longer = body.clone();
        longer.push(0);
        let err = compiled.document(&longer).unwrap().unwrap_err();
        assert_eq!(err, "1 bytes left over after the record");
    }

    #[test]
    fn references_are_compiled_with_the_schema() {
        let kind = r#"{"type":"enum","name":"Kind","namespace":"app","symbols":["FREE","PRO"]}"#;
        let signup = r#"{"type":"record","name":"Signup","namespace":"app","fields":[
            {"name":"user_id","type":"string"},{"name":"kind","type":"app.Kind"}]}"#;
        let cache = SchemaCache::new(SchemaKind::Avro);
        let reference = Referenced {
            name: "app.Kind".into(),
            text: kind.into(),
        };
        let compiled = cache
            .compile(&registered(SchemaKind::Avro, signup, vec![reference]))
            .unwrap();
        // user_id "u1", kind index 1 (PRO).
        let body = [0x04, b'u', b'1', 0x02];
        assert_eq!(
            compiled.document(&body).unwrap().unwrap(),
            serde_json::json!({"user_id": "u1", "kind": "PRO"})
        );
        let err = cache
            .compile(&registered(SchemaKind::Avro, signup, vec![]))
            .unwrap_err();
        assert!(
            err.starts_with("schema id 7 cannot be read as Avro"),
            "{err}"
        );
    }

    #[test]
    fn a_schema_that_names_its_own_types_reads() {
        // Debezium's envelope: `after` refers to the record type `before` defines.
        let envelope = r#"{"type":"record","name":"Envelope","namespace":"db.users","fields":[
            {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
                {"name":"id","type":"long"}]}]},
            {"name":"after","type":["null","Value"]},
            {"name":"op","type":"string"}]}"#;
        let cache = SchemaCache::new(SchemaKind::Avro);
        let compiled = cache
            .compile(&registered(SchemaKind::Avro, envelope, vec![]))
            .unwrap();
        // before: null; after: branch 1, id 5; op "c".
        let body = [0x00, 0x02, 0x0a, 0x02, b'c'];
        assert_eq!(
            compiled.document(&body).unwrap().unwrap(),
            serde_json::json!({"before": null, "after": {"id": 5}, "op": "c"})
        );
    }

    #[test]
    fn a_schema_of_another_kind_is_unreadable() {
        let cache = SchemaCache::new(SchemaKind::Avro);
        let err = cache
            .compile(&registered(SchemaKind::Json, "{}", vec![]))
            .unwrap_err();
        assert_eq!(
            err,
            "schema id 7 is JSON, not AVRO as the input format says"
        );
    }

    #[test]
    fn a_hostile_length_claim_does_not_allocate_it() {
        let cache = SchemaCache::new(SchemaKind::Avro);
        let compiled = cache
            .compile(&registered(SchemaKind::Avro, r#""string""#, vec![]))
            .unwrap();
        // A string claiming 2^62 bytes.
        let body = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(compiled.document(&body).unwrap().is_err());
    }

    #[test]
    fn arrays_of_items_that_take_no_bytes_are_refused() {
        let cache = SchemaCache::new(SchemaKind::Avro);
        for schema in [
            r#"{"type":"array","items":"null"}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":{"type":"fixed","name":"F","size":0}}}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"e","type":{"type":"record","name":"E","fields":[{"name":"n","type":"null"}]}},{"name":"a","type":["null",{"type":"array","items":"E"}]}]}"#,
        ] {
            let err = cache
                .compile(&registered(SchemaKind::Avro, schema, vec![]))
                .unwrap_err();
            assert!(
                err.contains("array of items that take no bytes"),
                "{schema}: {err}"
            );
        }
        // An array of anything that writes a byte is fine, and so is a lone null.
        for schema in [
            r#"{"type":"array","items":["null","string"]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"n","type":"null"},{"name":"a","type":{"type":"array","items":"boolean"}}]}"#,
        ] {
            assert!(
                cache
                    .compile(&registered(SchemaKind::Avro, schema, vec![]))
                    .is_ok(),
                "{schema}"
            );
        }
    }

    /// A Protobuf message of `desc` from JSON, encoded.
    fn proto_bytes(desc: MessageDescriptor, json: serde_json::Value) -> Vec<u8> {
        use protox::prost::Message;
        DynamicMessage::deserialize(desc, json)
            .unwrap()
            .encode_to_vec()
    }

    #[test]
    fn a_protobuf_message_reads_by_its_index_path_with_its_imports() {
        let common = r#"syntax = "proto3"; package common;
            message Profile { string nick = 1; string face_url = 2; }"#;
        let signup = r#"syntax = "proto3"; package app; import "common/profile.proto";
            message Other { int32 x = 1; }
            message Signup {
                int64 user_id = 1;
                common.Profile profile = 2;
                message Note { string user_id = 1; }
            }"#;
        let cache = SchemaCache::new(SchemaKind::Protobuf);
        let reference = Referenced {
            name: "common/profile.proto".into(),
            text: common.into(),
        };
        let compiled = cache
            .compile(&registered(SchemaKind::Protobuf, signup, vec![reference]))
            .unwrap();
        let Compiled::Protobuf(reader) = &*compiled else {
            panic!("{compiled:?}")
        };
        let signup_desc = reader.message_at(&[1]).unwrap();
        assert_eq!(signup_desc.full_name(), "app.Signup");
        let body = proto_bytes(
            signup_desc,
            serde_json::json!({"userId": 4004, "profile": {"nick": "Ann", "faceUrl": "https://a/x.png"}}),
        );
        let mut framed = wire::encode_message_indexes(&[1]);
        framed.extend(&body);
        assert_eq!(
            compiled.document(&framed).unwrap().unwrap(),
            serde_json::json!({"user_id": 4004, "profile": {"nick": "Ann", "face_url": "https://a/x.png"}}),
            "the .proto's field names, 64-bit numbers as numbers"
        );
        // A nested message: path [1, 0].
        let note = reader.message_at(&[1, 0]).unwrap();
        let mut framed = wire::encode_message_indexes(&[1, 0]);
        framed.extend(proto_bytes(note, serde_json::json!({"userId": "u1"})));
        assert_eq!(
            compiled.document(&framed).unwrap().unwrap(),
            serde_json::json!({"user_id": "u1"})
        );
        // A path that names nothing, bytes that are not the message.
        let mut framed = wire::encode_message_indexes(&[5]);
        framed.extend(&body);
        let err = compiled.document(&framed).unwrap().unwrap_err();
        assert!(err.contains("names no message"), "{err}");
        let mut framed = wire::encode_message_indexes(&[1]);
        framed.extend([0x0a, 0xff, 0xff]);
        assert!(compiled.document(&framed).unwrap().is_err());
        // Without its import, the schema does not compile.
        let err = cache
            .compile(&registered(SchemaKind::Protobuf, signup, vec![]))
            .unwrap_err();
        assert!(
            err.starts_with("schema id 7 cannot be read as Protobuf"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = SchemaCache::new(SchemaKind::Json);
        for id in 0..(MAX_CACHED_SCHEMAS as u32 + 10) {
            cache.insert(id, Ok(Arc::new(Compiled::Json)));
        }
        assert_eq!(cache.entries.read().unwrap().len(), MAX_CACHED_SCHEMAS);
        assert!(cache.get(MAX_CACHED_SCHEMAS as u32 + 9).is_some());
    }
}
