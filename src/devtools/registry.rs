//! A local Schema Registry for tests, the demo and the bench, as the Chat API emulator is one:
//! the subset of Confluent's REST API that producers and account-sync use, with the registry's
//! own error answers, optional basic auth, and knobs for outages.
//!
//! - `POST /subjects/{subject}/versions` registers a schema (`schema`, `schemaType`,
//!   `references`) and answers its id; the same schema (text, type and references) always gets
//!   the same id, across subjects, as Confluent's registry does.
//! - `GET /schemas/ids/{id}` answers the schema (`schemaType` left out for Avro, as the registry
//!   does), or 404 with error 40403.
//! - `GET /subjects/{subject}/versions/{version}` (a number or `latest`), or 40401 (no such
//!   subject) / 40402 (no such version).
//! - `GET /subjects` lists the subjects.
//! - With a user info set, a request without its basic auth gets 401 with error 40101.
//! - While down ([`RegistryHandle::set_down`]) every request gets 503 (error 50003), as a
//!   registry that lost its backing store answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A reference from one schema to another, as the registry's API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A schema as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    schema: String,
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    schema_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    references: Vec<SchemaReference>,
}

/// The registry's state.
#[derive(Debug, Default)]
struct Registry {
    /// Schemas by id - 1.
    schemas: Vec<Stored>,
    /// Each subject's versions, oldest first: schema ids.
    subjects: HashMap<String, Vec<u32>>,
}

#[derive(Debug, Default)]
struct Shared {
    registry: Mutex<Registry>,
    /// `USER:PASSWORD` every request must carry, if set.
    user_info: Option<String>,
    down: AtomicBool,
    /// `GET /schemas/ids/{id}` requests, answered or not.
    id_lookups: AtomicU64,
}

/// A running registry: its address, and the knobs a test turns.
pub struct RegistryHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RegistryHandle {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves on the current runtime; with `user_info`
    /// (`USER:PASSWORD`), every request must carry it as basic auth.
    pub async fn start(
        addr: SocketAddr,
        user_info: Option<String>,
    ) -> std::io::Result<RegistryHandle> {
        let shared = Arc::new(Shared {
            user_info,
            ..Shared::default()
        });
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let router = router(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RegistryHandle {
            local_addr,
            shared,
            shutdown_tx: Some(tx),
            task,
        })
    }

    /// `http://IP:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Registers `schema` under `subject` (as a producer's serializer does) and returns its id.
    /// `schema_type` is `None` for Avro, else `PROTOBUF` or `JSON`.
    pub fn register(
        &self,
        subject: &str,
        schema: &str,
        schema_type: Option<&str>,
        references: Vec<SchemaReference>,
    ) -> u32 {
        let stored = Stored {
            schema: schema.to_owned(),
            schema_type: schema_type.filter(|t| *t != "AVRO").map(str::to_owned),
            references,
        };
        self.shared
            .registry
            .lock()
            .unwrap()
            .register(subject, stored)
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// `GET /schemas/ids/{id}` requests so far.
    pub fn id_lookups(&self) -> u64 {
        self.shared.id_lookups.load(Ordering::SeqCst)
    }

    /// Stops serving and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RegistryHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    fn register(&mut self, subject: &str, stored: Stored) -> u32 {
        let id = match self.schemas.iter().position(|s| *s == stored) {
            Some(i) => i as u32 + 1,
            None => {
                self.schemas.push(stored);
                self.schemas.len() as u32
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        id
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/subjects", get(subjects))
        .route(
            "/subjects/{subject}/versions",
            axum::routing::post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(subject_version),
        )
        .with_state(shared)
}

/// The registry's error answer.
fn error(status: StatusCode, code: i64, message: &str) -> Response {
    json_answer(
        status,
        json!({ "error_code": code, "message": message }).to_string(),
    )
}

fn json_answer(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )],
        body,
    )
        .into_response()
}

/// The answer every request gets before its own: 503 while down, 401 without the credentials.
fn refused(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    if s.down.load(Ordering::SeqCst) {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "Error while forwarding the request to the leader",
        ));
    }
    let user_info = s.user_info.as_ref()?;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_info)
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (given != Some(expected.as_str()))
        .then(|| error(StatusCode::UNAUTHORIZED, 40101, "Unauthorized"))
}

async fn schema_by_id(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.id_lookups.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let found = id
        .parse::<usize>()
        .ok()
        .and_then(|id| id.checked_sub(1))
        .and_then(|i| s.registry.lock().unwrap().schemas.get(i).cloned());
    match found {
        Some(stored) => json_answer(StatusCode::OK, serde_json::to_string(&stored).unwrap()),
        None => error(
            StatusCode::NOT_FOUND,
            40403,
            &format!("Schema {id} not found"),
        ),
    }
}

async fn subjects(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let mut names: Vec<String> = s
        .registry
        .lock()
        .unwrap()
        .subjects
        .keys()
        .cloned()
        .collect();
    names.sort();
    json_answer(StatusCode::OK, serde_json::to_string(&names).unwrap())
}

async fn subject_version(
    State(s): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let registry = s.registry.lock().unwrap();
    let Some(versions) = registry.subjects.get(&subject) else {
        return error(
            StatusCode::NOT_FOUND,
            40401,
            &format!("Subject '{subject}' not found."),
        );
    };
    let index = match version.as_str() {
        "latest" => versions.len().checked_sub(1),
        v => v.parse::<usize>().ok().and_then(|v| v.checked_sub(1)),
    };
    let Some(&id) = index.and_then(|i| versions.get(i)) else {
        return error(
            StatusCode::NOT_FOUND,
            40402,
            &format!("Version {version} not found."),
        );
    };
    let stored = &registry.schemas[id as usize - 1];
    let mut answer = serde_json::to_value(stored).unwrap();
    let number = versions.iter().position(|&v| v == id).unwrap() + 1;
    answer["subject"] = json!(subject);
    answer["version"] = json!(number);
    answer["id"] = json!(id);
    json_answer(StatusCode::OK, answer.to_string())
}

async fn register(
    State(s): State<Arc<Shared>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let Ok(mut stored) = serde_json::from_slice::<Stored>(&body) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    };
    if stored.schema_type.as_deref() == Some("AVRO") {
        stored.schema_type = None;
    }
    let id = s.registry.lock().unwrap().register(&subject, stored);
    json_answer(StatusCode::OK, json!({ "id": id }).to_string())
}
