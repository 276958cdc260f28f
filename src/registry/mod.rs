//! A client of a Confluent-compatible Schema Registry, for the registry input formats: the wire
//! format of a framed record ([`wire`]), the registry's settings ([`config`]) and the REST calls
//! that fetch a writer schema by id with everything it references ([`client`]).
//!
//! Below the worker, beside `chat`: it knows HTTP, the registry's API and its failure classes,
//! not what a schema is used for (`worker/schemas.rs` compiles and caches them).

pub mod client;
pub mod config;
pub mod wire;

pub use client::{Referenced, RegisteredSchema, RegistryClient, RegistryError, SchemaKind};
pub use config::{Auth, RegistryConfig};
