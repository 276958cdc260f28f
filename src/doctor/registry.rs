//! The `schema-registry` check, made when the input format reads through a registry: the
//! registry answers `GET /subjects` with the configured credentials. The credentials are never
//! part of the report (the registry's URL holds none, and the errors carry no header).

use super::report::Check;
use crate::config::WorkerArgs;
use crate::registry::RegistryClient;

/// The check, or `None` when no registry is configured (the json and plain formats).
pub async fn check(w: &WorkerArgs) -> Option<Check> {
    const NAME: &str = "schema-registry";
    let config = match w.registry_config() {
        Ok(Some(config)) => config,
        Ok(None) => return None,
        Err(_) => {
            return Some(Check::skip(
                NAME,
                "the registry settings are invalid (see config)",
            ))
        }
    };
    let client = match RegistryClient::new(&config) {
        Ok(c) => c,
        Err(e) => return Some(Check::skip(NAME, e)),
    };
    Some(match client.subjects().await {
        Ok(subjects) => Check::pass(
            NAME,
            format!(
                "{} answers with these credentials: {} subjects",
                config.url,
                subjects.len()
            ),
        ),
        Err(e) => Check::fail(
            NAME,
            e,
            "check --schema-registry-url and the way from here to it; if the registry refused the credentials, check the user info (USER:PASSWORD) or the token in their file or variable",
        ),
    })
}
