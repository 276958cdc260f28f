//! Where the registry is and how to sign in: checked once, at start-up, with errors that name
//! the setting. The credentials come from a file or the environment, never from a flag (flags
//! show in `ps` and in a pod's spec), and never appear in `Debug` output.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use reqwest::Url;

/// How the worker signs in to the registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic auth with the registry's user info, `USER:PASSWORD` (Confluent's
    /// `basic.auth.user.info`).
    Basic(String),
    /// A bearer token.
    Bearer(String),
}

impl Auth {
    /// The `Authorization` header's value.
    pub(super) fn header_value(&self) -> String {
        match self {
            Auth::Basic(user_info) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_info)
            ),
            Auth::Bearer(token) => format!("Bearer {token}"),
        }
    }

    /// Checks what a file or variable gave: one line of visible ASCII (it goes into a header),
    /// `USER:PASSWORD` for basic auth. `source` names where it came from, for the error.
    pub fn checked(self, source: &str) -> Result<Auth, String> {
        let (text, what) = match &self {
            Auth::Basic(s) => (s, "user info"),
            Auth::Bearer(s) => (s, "token"),
        };
        if text.is_empty() {
            return Err(format!("{source}: the schema registry {what} is empty"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(format!(
                "{source}: the schema registry {what} holds characters that cannot go in an HTTP header"
            ));
        }
        if matches!(&self, Auth::Basic(s) if !s.contains(':')) {
            return Err(format!(
                "{source}: the schema registry user info must be USER:PASSWORD"
            ));
        }
        Ok(self)
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic(_) => f.write_str("Basic(<redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// A registry to read writer schemas from.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL: `http(s)://host[:port][/path]`, without credentials.
    pub url: Url,
    /// How to sign in, if the registry asks.
    pub auth: Option<Auth>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RegistryConfig {
    /// Checks the URL: http or https, no user info in it (credentials come from a file or the
    /// environment), and plain http with credentials only on a loopback host unless
    /// `allow_insecure_http` (they would travel in clear text).
    pub fn new(
        url: &str,
        auth: Option<Auth>,
        timeout: Duration,
        allow_insecure_http: bool,
    ) -> Result<Self, String> {
        let setting = "--schema-registry-url";
        let parsed = Url::parse(url.trim()).map_err(|e| format!("{setting}: not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{setting}: the scheme must be http or https"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // The URL is not echoed: it holds a credential.
            return Err(format!(
                "{setting} holds credentials: give them in a file or the environment instead (see --schema-registry-user-info-file)"
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!("{setting}: a base URL takes no query or fragment"));
        }
        let host = parsed.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if parsed.scheme() == "http" && auth.is_some() && !loopback && !allow_insecure_http {
            return Err(format!(
                "{setting} is plain http on a host that is not loopback: the credentials would travel in clear text (use https, or --allow-insecure-http)"
            ));
        }
        if timeout.is_zero() {
            return Err("--schema-registry-timeout must be greater than 0".into());
        }
        Ok(RegistryConfig {
            url: parsed,
            auth,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn urls_are_checked_without_echoing_credentials() {
        let err = RegistryConfig::new("https://u:hunter2@sr.example", None, T, false).unwrap_err();
        assert!(err.contains("holds credentials"), "{err}");
        assert!(!err.contains("hunter2"));
        assert!(RegistryConfig::new("ftp://sr.example", None, T, false).is_err());
        assert!(RegistryConfig::new("not a url", None, T, false).is_err());
        let basic = Some(Auth::Basic("u:p".into()));
        let err =
            RegistryConfig::new("http://sr.example:8081", basic.clone(), T, false).unwrap_err();
        assert!(err.contains("clear text"), "{err}");
        assert!(RegistryConfig::new("http://127.0.0.1:8081", basic.clone(), T, false).is_ok());
        assert!(RegistryConfig::new("http://sr.example:8081", basic, T, true).is_ok());
        assert!(RegistryConfig::new("http://sr.example:8081", None, T, false).is_ok());
    }

    #[test]
    fn credentials_are_checked_and_never_printed() {
        let a = Auth::Basic("user:s3cret".into()).checked("file x").unwrap();
        assert_eq!(format!("{a:?}"), "Basic(<redacted>)");
        assert_eq!(a.header_value(), "Basic dXNlcjpzM2NyZXQ=");
        assert!(Auth::Basic("nocolon".into()).checked("f").is_err());
        assert!(Auth::Bearer("a\r\nb".into()).checked("f").is_err());
        assert!(Auth::Bearer(String::new()).checked("f").is_err());
        let err = Auth::Bearer("s3cr\u{e9}t".into())
            .checked("ENV")
            .unwrap_err();
        assert!(!err.contains("s3cr"), "{err}");
    }
}
