//! The registry's REST API, the subset a reader needs: `GET /schemas/ids/{id}` for a record's
//! writer schema, and `GET /subjects/{subject}/versions/{version}` for the schemas it references.
//!
//! Every answer is read with a bound ([`MAX_ANSWER_BYTES`]) and sorted into the two failure
//! classes of [`RegistryError`]: the registry says the schema does not exist (the record's
//! fault), or it did not answer usably (not the record's fault: the caller pauses and asks again).

use std::collections::HashSet;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use thiserror::Error;

use super::config::RegistryConfig;
use crate::http::{read_bounded, BodyError};

/// The largest answer read: a schema with its metadata. A schema is a few KiB; this leaves room
/// for the largest generated ones, and bounds what a broken registry or proxy can make us hold.
pub const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// The most schemas one record's schema may reference, directly or not: a bound on the requests
/// one lookup makes.
pub const MAX_REFERENCES: usize = 64;

/// The media type the registry answers in (with plain JSON as a fallback).
const ACCEPT_TYPES: &str = "application/vnd.schemaregistry.v1+json, application/json";

/// What the writer schema is written in (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Avro,
    Protobuf,
    Json,
}

impl SchemaKind {
    /// The registry's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaKind::Avro => "AVRO",
            SchemaKind::Protobuf => "PROTOBUF",
            SchemaKind::Json => "JSON",
        }
    }

    fn parse(schema_type: Option<&str>) -> Result<Self, String> {
        match schema_type.unwrap_or("AVRO") {
            "AVRO" => Ok(SchemaKind::Avro),
            "PROTOBUF" => Ok(SchemaKind::Protobuf),
            "JSON" => Ok(SchemaKind::Json),
            other => Err(format!(
                "schemaType {:?} is none of AVRO, PROTOBUF, JSON",
                other.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// A schema another one references, by the name it is referenced with (a Protobuf import path,
/// an Avro full name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// The name the referencing schema uses.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// A writer schema and every schema it references, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its id in the registry.
    pub id: u32,
    /// What it is written in.
    pub kind: SchemaKind,
    /// Its text.
    pub text: String,
    /// The schemas it references, directly or not, each once, every one after those it
    /// references itself (the order a parser takes them in).
    pub references: Vec<Referenced>,
}

/// Why a schema could not be had, by whose fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// The registry answered that the schema, or one it references, does not exist (40403,
    /// 40401, 40402): a record that names it cannot be read, now or later (ids are never reused).
    #[error("{0}")]
    NotFound(String),
    /// The registry did not answer usably: unreachable, timed out, 5xx, credentials refused, an
    /// answer that is not the API's. Not the record's fault: ask again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

impl RegistryError {
    /// True when the record that needs the schema is at fault (it is dead-lettered).
    pub fn is_records_fault(&self) -> bool {
        matches!(self, RegistryError::NotFound(_))
    }
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/{v}` answers (the fields read).
#[derive(Debug, Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

/// An error answer.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error_code: i64,
    #[serde(default)]
    message: String,
}

/// A client of one registry. Cheap to clone (reqwest's pool is shared).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// The base URL, ending in `/` so that paths join under it.
    base: Url,
    /// The `Authorization` header, marked sensitive (never logged by reqwest).
    authorization: Option<HeaderValue>,
}

impl RegistryClient {
    /// A client for `config` (validated: see [`RegistryConfig::new`]).
    pub fn new(config: &RegistryConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("schema registry client: {e}"))?;
        let authorization = config.auth.as_ref().map(|auth| {
            let mut v = HeaderValue::from_str(&auth.header_value())
                .expect("credentials were checked to be header-safe");
            v.set_sensitive(true);
            v
        });
        Ok(RegistryClient {
            http,
            base: config.url.clone(),
            authorization,
        })
    }

    /// Writer schema `id` with everything it references.
    pub async fn schema(&self, id: u32) -> Result<RegisteredSchema, RegistryError> {
        let url = self.url(&["schemas", "ids", &id.to_string()]);
        let answer: SchemaAnswer = self.get(url, &format!("schema id {id}")).await?;
        let kind = SchemaKind::parse(answer.schema_type.as_deref()).map_err(|why| {
            RegistryError::NotFound(format!("schema id {id} cannot be read: {why}"))
        })?;
        let mut references = Vec::new();
        let mut seen = HashSet::new();
        self.resolve(&answer.references, &mut seen, &mut references, 0)
            .await
            .map_err(|e| match e {
                RegistryError::NotFound(why) => {
                    RegistryError::NotFound(format!("schema id {id}: {why}"))
                }
                other => other,
            })?;
        Ok(RegisteredSchema {
            id,
            kind,
            text: answer.schema,
            references,
        })
    }

    /// Fetches `refs` and what they reference in turn (depth first, so each comes after its own
    /// references), skipping those in `seen`.
    async fn resolve(
        &self,
        refs: &[Reference],
        seen: &mut HashSet<(String, i64)>,
        out: &mut Vec<Referenced>,
        depth: usize,
    ) -> Result<(), RegistryError> {
        for r in refs {
            if !seen.insert((r.subject.clone(), r.version)) {
                continue;
            }
            if seen.len() > MAX_REFERENCES || depth >= MAX_REFERENCES {
                return Err(RegistryError::NotFound(format!(
                    "it references more than {MAX_REFERENCES} schemas"
                )));
            }
            let what = format!(
                "reference {:?} (subject {:?} version {})",
                r.name, r.subject, r.version
            );
            let version = if r.version < 0 {
                "latest".to_string()
            } else {
                r.version.to_string()
            };
            let url = self.url(&["subjects", &r.subject, "versions", &version]);
            let answer: SchemaAnswer = self.get(url, &what).await?;
            Box::pin(self.resolve(&answer.references, seen, out, depth + 1)).await?;
            out.push(Referenced {
                name: r.name.clone(),
                text: answer.schema,
            });
        }
        Ok(())
    }

    /// `base` with `segments` appended, each percent-encoded (a subject may hold any character).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The registry's subjects (`GET /subjects`): whether it answers, with these credentials
    /// (the doctor's check).
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.get(self.url(&["subjects"]), "the subject list").await
    }

    /// One GET, its answer read with a bound and classified; `what` names the object in errors.
    async fn get<T: DeserializeOwned>(&self, url: Url, what: &str) -> Result<T, RegistryError> {
        let mut request = self.http.get(url).header(ACCEPT, ACCEPT_TYPES);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        // reqwest's errors name the URL, which holds no secret (credentials are never in it).
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{what}: {e}")))?;
        let status = response.status();
        let body = read_bounded(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLong { .. } => {
                    RegistryError::Unavailable(format!("{what}: HTTP {status}: {e}"))
                }
                BodyError::Transport(e) => RegistryError::Unavailable(format!("{what}: {e}")),
            })?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                RegistryError::Unavailable(format!(
                    "{what}: HTTP 200 with a body that is not the registry's answer ({e})"
                ))
            });
        }
        Err(classify_error(status, &body, what))
    }
}

/// The error of a non-200 answer. Only the registry's own "not found" codes on a 404 are the
/// record's fault: a bare 404 is more likely a wrong URL or a proxy than a missing schema.
fn classify_error(status: StatusCode, body: &[u8], what: &str) -> RegistryError {
    let answer: Option<ErrorAnswer> = serde_json::from_slice(body).ok();
    let message = |a: &ErrorAnswer| -> String { a.message.chars().take(200).collect() };
    match (status, answer) {
        (StatusCode::NOT_FOUND, Some(a)) if matches!(a.error_code, 40401..=40403) => {
            RegistryError::NotFound(format!(
                "{what} not found in the schema registry (error {}: {})",
                a.error_code,
                message(&a)
            ))
        }
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => RegistryError::Unavailable(
            format!("{what}: HTTP {status}: the registry refused the credentials"),
        ),
        (_, Some(a)) => RegistryError::Unavailable(format!(
            "{what}: HTTP {status} (error {}: {})",
            a.error_code,
            message(&a)
        )),
        (StatusCode::NOT_FOUND, None) => RegistryError::Unavailable(format!(
            "{what}: HTTP 404 without a registry error code (is --schema-registry-url right?)"
        )),
        (_, None) => RegistryError::Unavailable(format!("{what}: HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_registrys_not_found_codes_are_the_records_fault() {
        let body = br#"{"error_code":40403,"message":"Schema 9 not found"}"#;
        let e = classify_error(StatusCode::NOT_FOUND, body, "schema id 9");
        assert!(e.is_records_fault(), "{e}");
        assert_eq!(
            e.to_string(),
            "schema id 9 not found in the schema registry (error 40403: Schema 9 not found)"
        );
        for (status, body) in [
            (StatusCode::NOT_FOUND, &b"<html>nginx</html>"[..]),
            (
                StatusCode::UNAUTHORIZED,
                br#"{"error_code":40101,"message":"no"}"#,
            ),
            (StatusCode::FORBIDDEN, b""),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error_code":50001,"message":"store"}"#,
            ),
            (StatusCode::BAD_GATEWAY, b""),
        ] {
            let e = classify_error(status, body, "schema id 9");
            assert!(!e.is_records_fault(), "{status}: {e}");
            assert!(
                e.to_string().starts_with("schema registry unavailable: "),
                "{e}"
            );
        }
    }

    #[test]
    fn schema_types_default_to_avro() {
        assert_eq!(SchemaKind::parse(None), Ok(SchemaKind::Avro));
        assert_eq!(
            SchemaKind::parse(Some("PROTOBUF")),
            Ok(SchemaKind::Protobuf)
        );
        assert_eq!(SchemaKind::parse(Some("JSON")), Ok(SchemaKind::Json));
        assert!(SchemaKind::parse(Some("THRIFT")).is_err());
    }
}
