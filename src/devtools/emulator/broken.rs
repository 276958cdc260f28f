//! Broken answers: an API, or a proxy in front of it, that answers HTTP 200 with something that is
//! not an answer to the request. The worker must treat each as the API's fault — never run out of
//! memory on it, never dead-letter a user for it.
//!
//! The streamed kinds come from something in front of the service (the request never reaches
//! it); the mangled kinds are the service's real answer, changed on the way back (the request was
//! carried out).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{stream, StreamExt as _};
use serde_json::Value;

use crate::chat::api::Api;

/// How the answers are broken ([`super::Faults::broken_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokenAnswer {
    /// HTTP 200, then a body that never ends (chunked, no `Content-Length`).
    EndlessBody,
    /// HTTP 200 declaring a 1 GiB `Content-Length`, then streaming it.
    HugeBody,
    /// HTTP 200, then the start of an answer, one byte every 50 ms, without end.
    TrickledBody,
    /// The real answer with its `ResultItem`s and `FailAccounts` naming users who were not asked
    /// about (another request's answer).
    ForeignUsers,
    /// The real answer with all but the first `ResultItem` left out.
    MissingItems,
    /// The real answer with every `ResultItem` twice.
    DuplicateItems,
    /// The real answer with every `AccountStatus` a value the vendor does not document.
    UnknownStatus,
    /// HTTP 200 with a proxy's HTML page.
    HtmlPage,
    /// HTTP 200 with JSON of the wrong types (`ErrorCode` a string, `ResultItem` an object).
    WrongTypes,
}

impl BrokenAnswer {
    /// Whether the request reaches the service and its real answer is then changed.
    pub(crate) fn mangles(self) -> bool {
        matches!(
            self,
            BrokenAnswer::ForeignUsers
                | BrokenAnswer::MissingItems
                | BrokenAnswer::DuplicateItems
                | BrokenAnswer::UnknownStatus
        )
    }
}

/// The answer a proxy in front of the service gives instead of passing the request on.
pub(crate) fn instead(kind: BrokenAnswer) -> Response {
    match kind {
        BrokenAnswer::EndlessBody => streamed(None, endless()),
        BrokenAnswer::HugeBody => streamed(Some(1 << 30), endless()),
        BrokenAnswer::TrickledBody => streamed(None, trickled()),
        BrokenAnswer::HtmlPage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            PROXY_PAGE,
        )
            .into_response(),
        BrokenAnswer::WrongTypes => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"ActionStatus":"OK","ErrorCode":"0","ErrorInfo":[],"ResultItem":{"UserID":1}}"#,
        )
            .into_response(),
        // Mangled kinds are the service's own answer, changed: see [`mangle`].
        _ => (StatusCode::OK, "").into_response(),
    }
}

/// The service's answer `json` to a call of `api`, changed as `kind` says. Answers without items
/// (a single import, an error) pass unchanged.
pub(crate) fn mangle(kind: BrokenAnswer, api: Api, json: String) -> String {
    let Ok(mut answer) = serde_json::from_str::<Value>(&json) else {
        return json;
    };
    if let Some(Value::Array(items)) = answer.get_mut("ResultItem") {
        match kind {
            BrokenAnswer::ForeignUsers => {
                for item in items.iter_mut() {
                    if let Some(Value::String(id)) = item.get_mut("UserID") {
                        *id = format!("not-{id}");
                    }
                }
            }
            BrokenAnswer::MissingItems => items.truncate(1),
            BrokenAnswer::DuplicateItems => {
                let twice: Vec<Value> = items.iter().chain(items.iter()).cloned().collect();
                *items = twice;
            }
            BrokenAnswer::UnknownStatus => {
                for item in items.iter_mut() {
                    if let Some(status) = item.get_mut("AccountStatus") {
                        *status = Value::from("Frozen");
                    }
                }
            }
            _ => {}
        }
    }
    if api == Api::MultiaccountImport && kind == BrokenAnswer::ForeignUsers {
        answer["FailAccounts"] = Value::from(vec!["somebody-else"]);
    }
    answer.to_string()
}

/// nginx's page for a proxy that wants a login, served with status 200 as some do.
const PROXY_PAGE: &str = "<html>\r\n<head><title>Sign in</title></head>\r\n<body>\r\n\
<center><h1>Proxy authentication required</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The start of an answer that a streamed body repeats after.
const ANSWER_START: &[u8] = br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":["#;

fn streamed(
    declared: Option<u64>,
    body: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Some(n) = declared {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
    }
    response
}

/// The answer's start, then whitespace (valid JSON, so a parser would keep reading) in 64 KiB
/// chunks as fast as the client takes them, until it hangs up.
fn endless() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let filler = Bytes::from(vec![b' '; 64 * 1024]);
    stream::once(async { Ok(Bytes::from_static(ANSWER_START)) })
        .chain(stream::repeat_with(move || Ok(filler.clone())))
}

/// The answer's start, then whitespace, one byte every 50 ms, until the client hangs up.
fn trickled() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::once(async { Ok(Bytes::from_static(ANSWER_START)) }).chain(stream::unfold(
        (),
        |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok(Bytes::from_static(b" ")), ()))
        },
    ))
}
