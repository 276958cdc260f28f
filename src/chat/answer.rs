//! Reading the API's answers: a body in, the result of the call out — or the reason the body does
//! not answer the request that was sent.
//!
//! An HTTP 200 is not yet an answer. A proxy's HTML page, JSON of the wrong shape, or well-formed
//! JSON that speaks of users nobody asked about (a vendor bug, a middlebox replaying another
//! request's answer) says nothing about the users of this request, so it is the API's fault: a
//! [`ChatError::BadResponse`], retryable and an availability error, never a verdict about a user.
//! Only what the vendor says about one item it was asked about — a per-item `ResultCode`, a
//! `FailAccounts` entry for a user that was sent — belongs to that user.
//!
//! The client reads every answer here *before* it reports the attempt to the outage detector and
//! the failover, so an answer that does not answer counts as a failed attempt there too.

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;

use super::api::{
    AccountStatus, Api, CheckResponse, CheckResultItem, DeleteResponse, DeleteResultItem,
    MultiImportResponse, PlainResponse, Status,
};
use super::error::ChatError;

/// The result for one UserID of an `account_check` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The account exists.
    Imported,
    /// The account must be imported.
    NotImported,
    /// The vendor could not check this one UserID (non-zero per-item `ResultCode`).
    Failed { code: i64, info: String },
}

/// The result for one UserID of an `account_delete` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The account was deleted.
    Deleted,
    /// There was no account (per-item `ResultCode` 70107): for a sync, already done.
    Absent,
    /// The vendor did not delete this one UserID (another non-zero per-item `ResultCode`).
    Failed { code: i64, info: String },
}

/// The per-item `ResultCode` of `account_delete` for a UserID that has no account.
pub const DELETE_ABSENT: i64 = 70107;

/// Responses whose common status the client checks.
pub trait HasStatus {
    /// The `ActionStatus` / `ErrorCode` / `ErrorInfo` triple.
    fn status(&self) -> &Status;
}

impl HasStatus for CheckResponse {
    fn status(&self) -> &Status {
        &self.status
    }
}
impl HasStatus for PlainResponse {
    fn status(&self) -> &Status {
        &self.status
    }
}
impl HasStatus for DeleteResponse {
    fn status(&self) -> &Status {
        &self.status
    }
}
impl HasStatus for MultiImportResponse {
    fn status(&self) -> &Status {
        &self.status
    }
}

/// An `account_check` answer to a request for `user_ids`: one entry per requested UserID, in
/// request order (a UserID requested twice gets its entry twice).
pub fn check(user_ids: &[&str], body: &[u8]) -> Result<Vec<CheckOutcome>, ChatError> {
    let resp: CheckResponse = parse(Api::AccountCheck, body)?;
    match_check_items(user_ids, &resp.result_item)
}

/// An `account_delete` answer to a request for `user_ids`: one entry per requested UserID, in
/// request order, under the same rules as `account_check`'s items.
pub fn delete(user_ids: &[&str], body: &[u8]) -> Result<Vec<DeleteOutcome>, ChatError> {
    let api = Api::AccountDelete;
    let resp: DeleteResponse = parse(api, body)?;
    let items = match_items(api, user_ids, &resp.result_item, |i| &i.user_id)?;
    Ok(items
        .into_iter()
        .map(|item: &DeleteResultItem| match item.result_code {
            0 => DeleteOutcome::Deleted,
            DELETE_ABSENT => DeleteOutcome::Absent,
            code => DeleteOutcome::Failed {
                code,
                info: truncate(&item.result_info, INFO_KEPT),
            },
        })
        .collect())
}

/// An `account_import` answer: nothing to read beyond its status.
pub fn import(body: &[u8]) -> Result<(), ChatError> {
    parse::<PlainResponse>(Api::AccountImport, body).map(|_| ())
}

/// A `multiaccount_import` answer to a request for `user_ids`: the UserIDs it lists in
/// `FailAccounts` (each once), all of which must have been sent.
pub fn multi_import(user_ids: &[&str], body: &[u8]) -> Result<Vec<String>, ChatError> {
    let resp: MultiImportResponse = parse(Api::MultiaccountImport, body)?;
    let sent: HashSet<&str> = user_ids.iter().copied().collect();
    let mut seen = HashSet::with_capacity(resp.fail_accounts.len());
    let mut failed = Vec::with_capacity(resp.fail_accounts.len());
    for id in resp.fail_accounts {
        if !sent.contains(id.as_str()) {
            return Err(bad(
                Api::MultiaccountImport,
                format!("FailAccounts names {}, which was not sent", quoted(&id)),
            ));
        }
        if seen.insert(id.clone()) {
            failed.push(id);
        }
    }
    Ok(failed)
}

/// The body as `Resp`, or why not; a non-zero `ErrorCode` is the vendor's error for the call.
fn parse<Resp: DeserializeOwned + HasStatus>(api: Api, body: &[u8]) -> Result<Resp, ChatError> {
    let parsed: Resp = serde_json::from_slice(body).map_err(|e| {
        bad(
            api,
            format!(
                "{} (body starts {})",
                parse_error(&e),
                quoted_prefix(body, PREFIX_SHOWN)
            ),
        )
    })?;
    let st = parsed.status();
    if !st.is_ok() {
        return Err(ChatError::Vendor {
            api,
            code: st.error_code,
            info: truncate(&st.error_info, INFO_KEPT),
        });
    }
    Ok(parsed)
}

/// Maps check result items back to the requested UserIDs, each with an `AccountStatus` when its
/// `ResultCode` is 0. Anything else is unreadable (retryable), never silently "not imported".
fn match_check_items(
    user_ids: &[&str],
    items: &[CheckResultItem],
) -> Result<Vec<CheckOutcome>, ChatError> {
    let api = Api::AccountCheck;
    let matched = match_items(api, user_ids, items, |i| &i.user_id)?;
    user_ids
        .iter()
        .zip(matched)
        .map(|(id, item)| {
            Ok(match (item.result_code, item.account_status) {
                (0, Some(AccountStatus::Imported)) => CheckOutcome::Imported,
                (0, Some(AccountStatus::NotImported)) => CheckOutcome::NotImported,
                (0, None) => {
                    return Err(bad(
                        api,
                        format!("ResultItem for {} has no AccountStatus", quoted(id)),
                    ))
                }
                (code, _) => CheckOutcome::Failed {
                    code,
                    info: truncate(&item.result_info, INFO_KEPT),
                },
            })
        })
        .collect()
}

/// The item of each requested UserID, in request order. The items must answer exactly the
/// request: one item for each requested UserID (as many as it was requested, at most), none for
/// anyone else.
fn match_items<'i, I>(
    api: Api,
    user_ids: &[&str],
    items: &'i [I],
    user_id: impl Fn(&I) -> &str,
) -> Result<Vec<&'i I>, ChatError> {
    let mut requested: HashMap<&str, usize> = HashMap::with_capacity(user_ids.len());
    for id in user_ids {
        *requested.entry(id).or_default() += 1;
    }
    let mut by_id: HashMap<&str, (&I, usize)> = HashMap::with_capacity(items.len());
    for item in items {
        let id = user_id(item);
        let Some(&times) = requested.get(id) else {
            return Err(bad(
                api,
                format!("ResultItem for {}, which was not asked about", quoted(id)),
            ));
        };
        let seen = by_id.entry(id).or_insert((item, 0));
        seen.1 += 1;
        if seen.1 > times {
            return Err(bad(api, format!("ResultItem for {} twice", quoted(id))));
        }
    }
    user_ids
        .iter()
        .map(|id| {
            by_id
                .get(id)
                .map(|&(item, _)| item)
                .ok_or_else(|| bad(api, format!("no ResultItem for UserID {}", quoted(id))))
        })
        .collect()
}

/// serde_json's reason, cut: a type error quotes the value it found (`invalid type: string
/// "…"`, `unknown variant `…``) whole, and a value can be as long as the body.
fn parse_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.len() <= PARSE_ERROR_KEPT {
        return text;
    }
    // The position ends the text; keep it when the message is cut.
    format!(
        "{} at line {} column {}",
        truncate(&text, PARSE_ERROR_KEPT),
        e.line(),
        e.column()
    )
}

/// How much of serde_json's reason an error keeps.
const PARSE_ERROR_KEPT: usize = 200;
/// How much of an unparsable body an error quotes.
const PREFIX_SHOWN: usize = 120;
/// How much of the vendor's free text (`ErrorInfo`, `ResultInfo`) is kept: it ends up in outcome
/// and dead-letter records, and a broken answer could make it as long as the body.
const INFO_KEPT: usize = 500;
/// How much of a foreign UserID an error quotes (a real one has at most 32 bytes).
const ID_SHOWN: usize = 40;

fn bad(api: Api, detail: String) -> ChatError {
    ChatError::BadResponse { api, detail }
}

fn quoted(id: &str) -> String {
    format!("{:?}", truncate(id, ID_SHOWN))
}

fn quoted_prefix(body: &[u8], n: usize) -> String {
    format!("{:?}", String::from_utf8_lossy(&body[..body.len().min(n)]))
}

/// `text` cut to at most `max` bytes on a character boundary, with "…" when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
