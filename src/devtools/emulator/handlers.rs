//! Routing, request checking in the vendor's order, and the four APIs.
//!
//! The per-request work after the fault delays is synchronous ([`process`]): it takes the locks,
//! answers and returns, so no lock is ever held across an `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::chat::api::{
    AccountStatus, Api, CheckRequest, CheckResponse, CheckResultItem, DeleteRequest,
    DeleteResponse, DeleteResultItem, ImportRequest, MultiImportRequest, MultiImportResponse,
    PlainResponse, Status, MAX_IDS_PER_CALL, MAX_PROFILE_FIELD_BYTES, MAX_USER_ID_BYTES,
};
use crate::chat::usersig;

use super::accounts::{Existing, ImportRefused, Profile};
use super::broken;
use super::state::{CODE_DELETION_DISABLED, CODE_FREQUENCY_LIMIT};
use super::Shared;

/// Answer of the gateway in front of the service when it fails: nginx's page, as seen in the wild.
const BAD_GATEWAY_HTML: &str =
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Serves the emulator's routes on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Small JSON answers on keep-alive connections: Nagle plus delayed ACKs would add tens of ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The API paths take POST only (axum answers other methods 405), `GET /stats` serves the
/// counters, and anything else is 404.
fn router(shared: Arc<Shared>) -> Router {
    let api = |api: Api| {
        post(move |State(s): State<Arc<Shared>>, uri: Uri, body: Bytes| {
            held_then_handle(s, api, uri, body)
        })
    };
    Router::new()
        .route(Api::AccountCheck.path(), api(Api::AccountCheck))
        .route(Api::AccountImport.path(), api(Api::AccountImport))
        .route(Api::MultiaccountImport.path(), api(Api::MultiaccountImport))
        .route(Api::AccountDelete.path(), api(Api::AccountDelete))
        .route("/stats", get(stats))
        .with_state(shared)
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, to_json(&s.stats()))
}

/// An API request while the emulator holds requests (`EmulatorHandle::hold`) waits for the
/// release first, in a task of its own like a hung request: a client that gives up meanwhile does
/// not cancel it.
async fn held_then_handle(s: Arc<Shared>, api: Api, uri: Uri, body: Bytes) -> Response {
    if !s.hold.holds(api) {
        return handle(s, api, uri, body).await;
    }
    let held = tokio::spawn(async move {
        s.hold.pass().await;
        handle(s, api, uri, body).await
    });
    held.await.unwrap_or_else(|_| {
        (StatusCode::INTERNAL_SERVER_ERROR, "emulator task failed").into_response()
    })
}

/// One API request: fault delays first (they model the network and an overloaded backend), then
/// the vendor's checks.
async fn handle(s: Arc<Shared>, api: Api, uri: Uri, body: Bytes) -> Response {
    s.counters.call(api);
    let faults = s.faults();
    let delay = s.dice.latency(&faults);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if s.dice.roll(faults.hang_rate) {
        s.counters.hung();
        let hang = Duration::from_millis(faults.hang_ms);
        // The held request is finished in its own task: when the client times out and hangs up,
        // hyper drops this handler, but the vendor would still carry the import out. That case
        // ("timed out, yet imported") is exactly what the worker's idempotent retry must handle.
        let held = tokio::spawn(async move {
            tokio::time::sleep(hang).await;
            process(&s, api, &uri, &body)
        });
        return held.await.unwrap_or_else(|_| {
            (StatusCode::INTERNAL_SERVER_ERROR, "emulator task failed").into_response()
        });
    }
    if let Some(kind) = faults.broken_answer.filter(|k| !k.mangles()) {
        s.counters.broken_answer();
        return broken::instead(kind);
    }
    process(&s, api, &uri, &body)
}

/// A request refused with a vendor ErrorCode.
#[derive(Debug)]
struct Reject {
    code: i64,
    info: String,
}

fn reject(code: i64, info: impl Into<String>) -> Reject {
    Reject {
        code,
        info: info.into(),
    }
}

/// Everything after the delays, synchronously.
fn process(s: &Shared, api: Api, uri: &Uri, body: &[u8]) -> Response {
    // Faults are read again: a test may have switched the outage off while this request waited.
    let faults = s.faults();
    if s.dice.roll(faults.http_502_rate) {
        s.counters.http_502();
        return (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            BAD_GATEWAY_HTML,
        )
            .into_response();
    }
    let answer = authenticate(s, uri)
        .and_then(|()| admit(s, api, faults.transient_error_rate))
        .and_then(|()| match api {
            Api::AccountCheck => account_check(s, body),
            Api::AccountImport => account_import(s, body),
            Api::MultiaccountImport => multiaccount_import(s, body),
            Api::AccountDelete => account_delete(s, body),
        });
    let (code, json) = match answer {
        Ok(json) => (0, json),
        Err(r) => (
            r.code,
            to_json(&PlainResponse {
                status: Status::fail(r.code, r.info),
            }),
        ),
    };
    s.counters.answered(api, code);
    let json = match faults.broken_answer.filter(|k| k.mangles()) {
        Some(kind) => {
            s.counters.broken_answer();
            broken::mangle(kind, api, json)
        }
        None => json,
    };
    json_response(StatusCode::OK, json)
}

/// Steps 2–4: query string, UserSig, admin identifier.
fn authenticate(s: &Shared, uri: &Uri) -> Result<(), Reject> {
    // A query that does not even parse is treated like one without parameters: the first
    // missing one decides the code, as with the vendor (never axum's rejection page).
    let query: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };

    let sdkappid = param("sdkappid")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| reject(60012, "SDKAppID required: sdkappid missing or not a number"))?;
    let identifier = param("identifier")
        .ok_or_else(|| reject(60004, "identifier required: identifier missing"))?;
    let sig = param("usersig").ok_or_else(|| reject(70002, "UserSig required: usersig missing"))?;
    if param("random")
        .and_then(|v| v.parse::<u32>().ok())
        .is_none()
    {
        return Err(reject(
            60002,
            "random missing or not a 32-bit unsigned number",
        ));
    }
    if query.get("contenttype").is_some_and(|v| v != "json") {
        return Err(reject(60002, "contenttype must be json"));
    }
    if sdkappid != s.sdkappid {
        return Err(reject(
            60006,
            format!("SDKAppID invalid: {sdkappid} is not a known app"),
        ));
    }
    s.auth()
        .verify(sig, sdkappid, identifier, usersig::unix_now())
        .map_err(|e| reject(e.vendor_code(), e.to_string()))?;
    if identifier != s.identifier {
        return Err(reject(
            60010,
            format!("{identifier} is not an App administrator"),
        ));
    }
    Ok(())
}

/// Steps 5–6: frequency limit, then transient trouble; a request refused here has no effect.
///
/// The limit comes first because the vendor's gateway counts every authenticated call against
/// the budget, whether the backend then fails or not.
fn admit(s: &Shared, api: Api, transient_error_rate: f64) -> Result<(), Reject> {
    if !s.admit(api) {
        return Err(reject(
            CODE_FREQUENCY_LIMIT,
            "REST API call frequency over limit",
        ));
    }
    if s.dice.roll(transient_error_rate) {
        s.counters.transient();
        let code = s.dice.transient_code();
        let info = if code == 70169 {
            "server timeout, please retry later"
        } else {
            "internal server error, please retry later"
        };
        return Err(reject(code, info));
    }
    Ok(())
}

/// Step 7: no JSON at all is 60003; JSON of the wrong shape (missing field, wrong type) is 70402,
/// the code the vendor uses for invalid parameters. One parse tells them apart.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reject> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => reject(70402, format!("invalid parameters: {e}")),
        _ => reject(60003, format!("JSON parse error: {e}")),
    })
}

/// The vendor's list-size rule shared by check, multi-import and delete: 1 to 100 entries.
/// (The vendor only gives the maximum; an empty list is refused the same way: `docs/chat-api.md`,
/// "The emulator's own choices".)
fn check_list_len(field: &str, len: usize) -> Result<(), Reject> {
    if len == 0 || len > MAX_IDS_PER_CALL {
        return Err(reject(
            70402,
            format!(
                "invalid parameters: {field} must have 1 to {MAX_IDS_PER_CALL} entries, got {len}"
            ),
        ));
    }
    Ok(())
}

/// Only the length rule: the vendor's statements on allowed characters disagree
/// (`docs/chat-api.md`, "Field limits"), and the worker refuses other characters before calling,
/// so the emulator need not decide.
fn user_id_problem(user_id: &str) -> Option<String> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        Some(format!(
            "UserID must be 1 to {MAX_USER_ID_BYTES} bytes, got {}",
            user_id.len()
        ))
    } else {
        None
    }
}

fn account_check(s: &Shared, body: &[u8]) -> Result<String, Reject> {
    let req: CheckRequest<'static> = parse(body)?;
    check_list_len("CheckItem", req.check_item.len())?;
    let mut failures = 0;
    let result_item: Vec<CheckResultItem> = {
        let mut accounts = s.accounts();
        req.check_item
            .into_iter()
            .map(|item| {
                let user_id = item.user_id.into_owned();
                match user_id_problem(&user_id) {
                    Some(problem) => {
                        failures += 1;
                        CheckResultItem {
                            user_id,
                            result_code: 70402,
                            result_info: problem,
                            account_status: None,
                        }
                    }
                    None => {
                        let status = if accounts.check(&user_id) {
                            AccountStatus::Imported
                        } else {
                            AccountStatus::NotImported
                        };
                        CheckResultItem {
                            user_id,
                            result_code: 0,
                            result_info: String::new(),
                            account_status: Some(status),
                        }
                    }
                }
            })
            .collect()
    };
    for _ in 0..failures {
        s.counters.item_failure(70402);
    }
    Ok(to_json(&CheckResponse {
        status: Status::ok(),
        result_item,
    }))
}

/// The account_import rules, in the order `docs/chat-api.md` ("The emulator's own choices") lists
/// them: UserID, the poison knob, field lengths, sensitive words, then the rules of the store (an
/// existing account kept or overwritten; the 3-month rule and the edition limit, which only a new
/// account can hit).
fn import_one(s: &Shared, req: &ImportRequest<'_>, existing: Existing) -> Result<(), Reject> {
    if let Some(problem) = user_id_problem(&req.user_id) {
        return Err(reject(70402, format!("invalid parameters: {problem}")));
    }
    if s.faults().poison_user_ids.iter().any(|p| *p == req.user_id) {
        return Err(reject(70500, "internal server error, please retry later"));
    }
    for (field, value) in [("Nick", &req.nick), ("FaceUrl", &req.face_url)] {
        let len = value.as_deref().map_or(0, str::len);
        if len > MAX_PROFILE_FIELD_BYTES {
            return Err(reject(
                40601,
                format!("{field} is {len} bytes, more than {MAX_PROFILE_FIELD_BYTES}"),
            ));
        }
    }
    if let Some(nick) = req.nick.as_deref() {
        if s.sensitive_words.iter().any(|w| nick.contains(w.as_str())) {
            return Err(reject(40005, "Nick contains sensitive words"));
        }
    }
    let profile = Profile {
        nick: req.nick.as_deref().map(str::to_owned),
        face_url: req.face_url.as_deref().map(str::to_owned),
    };
    s.accounts()
        .import(&req.user_id, &profile, existing)
        .map_err(|refused| {
            let info = match refused {
                ImportRefused::EditionLimit => {
                    "account count over the edition's limit: more accounts need the Pro edition"
                }
                ImportRefused::DeletedRecently => {
                    "the account was deleted less than 3 months ago and cannot be imported again yet"
                }
            };
            reject(refused.code(), info)
        })
}

fn account_import(s: &Shared, body: &[u8]) -> Result<String, Reject> {
    let req: ImportRequest<'static> = parse(body)?;
    import_one(s, &req, Existing::Keep)?;
    Ok(to_json(&PlainResponse {
        status: Status::ok(),
    }))
}

fn multiaccount_import(s: &Shared, body: &[u8]) -> Result<String, Reject> {
    let req: MultiImportRequest<'static> = parse(body)?;
    // Both forms in one body is not described anywhere; the current form wins.
    let accounts = match (req.account_list, req.accounts) {
        (Some(list), _) => list,
        (None, Some(ids)) => ids
            .into_iter()
            .map(|user_id| ImportRequest {
                user_id,
                nick: None,
                face_url: None,
            })
            .collect(),
        (None, None) => return Err(reject(70402, "invalid parameters: AccountList required")),
    };
    check_list_len("AccountList", accounts.len())?;
    // Per-account failures, the edition limit included, are listed rather than failing the call:
    // that is what FailAccounts is for.
    let mut fail_accounts = Vec::new();
    for account in &accounts {
        // The vendor's batch import updates an existing account with the given profile (the
        // single import leaves it alone): counted, so tests can prove the worker never does it.
        let has_profile = account.nick.is_some() || account.face_url.is_some();
        if has_profile && s.accounts().exists(&account.user_id) {
            s.counters.profile_overwrite();
        }
        if let Err(r) = import_one(s, account, Existing::Overwrite) {
            s.counters.item_failure(r.code);
            fail_accounts.push(account.user_id.clone().into_owned());
        }
    }
    Ok(to_json(&MultiImportResponse {
        status: Status::ok(),
        fail_accounts,
    }))
}

fn account_delete(s: &Shared, body: &[u8]) -> Result<String, Reject> {
    if !s.deletion_enabled() {
        return Err(reject(
            CODE_DELETION_DISABLED,
            "account deletion is not enabled for this app: only trial apps can delete, or switch it on in the console",
        ));
    }
    let req: DeleteRequest<'static> = parse(body)?;
    check_list_len("DeleteItem", req.delete_item.len())?;
    let mut failures = Vec::new();
    let result_item: Vec<DeleteResultItem> = {
        let mut accounts = s.accounts();
        req.delete_item
            .into_iter()
            .map(|item| {
                let user_id = item.user_id.into_owned();
                let (result_code, result_info) = match user_id_problem(&user_id) {
                    Some(problem) => (70402, problem),
                    None if accounts.delete(&user_id) => (0, String::new()),
                    None => (70107, "UserID does not exist".to_owned()),
                };
                if result_code != 0 {
                    failures.push(result_code);
                }
                DeleteResultItem {
                    user_id,
                    result_code,
                    result_info,
                }
            })
            .collect()
    };
    for code in failures {
        s.counters.item_failure(code);
    }
    Ok(to_json(&DeleteResponse {
        status: Status::ok(),
        result_item,
    }))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("response types serialise infallibly")
}

fn json_response(status: StatusCode, json: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(json),
    )
        .into_response()
}
