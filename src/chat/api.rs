//! Request and response bodies of the Chat REST API, as the vendor spells them (PascalCase fields).
//!
//! Shared by the client (which serialises requests and parses responses) and the emulator (which
//! does the reverse), so the two can never disagree on a field name. Request strings are `Cow` so
//! the client serialises borrowed UserIDs without copying; deserialising always yields owned data.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The REST endpoints account-sync uses (and the emulator serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `account_check`: up to 100 UserIDs per call, 100 calls/s.
    AccountCheck,
    /// `account_import`: one account per call, 200 calls/s.
    AccountImport,
    /// `multiaccount_import`: up to 100 accounts per call, 100 calls/s.
    MultiaccountImport,
    /// `account_delete`: up to 100 UserIDs per call, 100 calls/s.
    AccountDelete,
}

impl Api {
    /// All endpoints, for tables and metrics.
    pub const ALL: [Api; 4] = [
        Api::AccountCheck,
        Api::AccountImport,
        Api::MultiaccountImport,
        Api::AccountDelete,
    ];

    /// The last path segment, also used as the `api` metric label.
    pub fn name(self) -> &'static str {
        match self {
            Api::AccountCheck => "account_check",
            Api::AccountImport => "account_import",
            Api::MultiaccountImport => "multiaccount_import",
            Api::AccountDelete => "account_delete",
        }
    }

    /// The URL path below the domain.
    pub fn path(self) -> &'static str {
        match self {
            Api::AccountCheck => "/v4/im_open_login_svc/account_check",
            Api::AccountImport => "/v4/im_open_login_svc/account_import",
            Api::MultiaccountImport => "/v4/im_open_login_svc/multiaccount_import",
            Api::AccountDelete => "/v4/im_open_login_svc/account_delete",
        }
    }

    /// The vendor's limit for the whole app, in calls per second, of the APIs the worker
    /// rate-limits (`docs/chat-api.md`); `None` for the others.
    pub fn vendor_rate_limit(self) -> Option<f64> {
        match self {
            Api::AccountCheck | Api::MultiaccountImport | Api::AccountDelete => Some(100.0),
            Api::AccountImport => Some(200.0),
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Most UserIDs one `account_check` (or `multiaccount_import`, `account_delete`) call may carry.
pub const MAX_IDS_PER_CALL: usize = 100;
/// Longest UserID the vendor accepts, in bytes.
pub const MAX_USER_ID_BYTES: usize = 32;
/// Longest Nick or FaceUrl the vendor accepts, in bytes (40601 above that).
pub const MAX_PROFILE_FIELD_BYTES: usize = 500;

/// True when `id` is a UserID the worker will send: 1–32 bytes of `[A-Za-z0-9_-]`
/// (`docs/chat-api.md`, "Field limits": other characters are rejected as the safe side).
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `{"UserID": "..."}`, the item of `CheckItem` and `DeleteItem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdItem<'a> {
    #[serde(rename = "UserID")]
    pub user_id: Cow<'a, str>,
}

/// `account_check` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest<'a> {
    #[serde(rename = "CheckItem")]
    pub check_item: Vec<UserIdItem<'a>>,
}

/// `account_import` request, and the item of `multiaccount_import`'s `AccountList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRequest<'a> {
    #[serde(rename = "UserID")]
    pub user_id: Cow<'a, str>,
    #[serde(rename = "Nick", default, skip_serializing_if = "Option::is_none")]
    pub nick: Option<Cow<'a, str>>,
    #[serde(rename = "FaceUrl", default, skip_serializing_if = "Option::is_none")]
    pub face_url: Option<Cow<'a, str>>,
}

/// `multiaccount_import` request: the current `AccountList` form or the older `Accounts` form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MultiImportRequest<'a> {
    #[serde(
        rename = "AccountList",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub account_list: Option<Vec<ImportRequest<'a>>>,
    #[serde(rename = "Accounts", default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<Cow<'a, str>>>,
}

/// `account_delete` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest<'a> {
    #[serde(rename = "DeleteItem")]
    pub delete_item: Vec<UserIdItem<'a>>,
}

/// The three fields every response carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// "OK" or "FAIL".
    #[serde(rename = "ActionStatus")]
    pub action_status: String,
    /// 0 on success.
    #[serde(rename = "ErrorCode")]
    pub error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    pub error_info: String,
}

impl Status {
    /// A success status.
    pub fn ok() -> Self {
        Status {
            action_status: "OK".into(),
            error_code: 0,
            error_info: String::new(),
        }
    }

    /// A failure status with the vendor's code and text.
    pub fn fail(code: i64, info: impl Into<String>) -> Self {
        Status {
            action_status: "FAIL".into(),
            error_code: code,
            error_info: info.into(),
        }
    }

    /// The vendor's success test: `ErrorCode` 0 (`ActionStatus` is redundant with it).
    pub fn is_ok(&self) -> bool {
        self.error_code == 0
    }
}

/// `AccountStatus` of a check result item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountStatus {
    Imported,
    NotImported,
}

/// One item of `account_check`'s `ResultItem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResultItem {
    #[serde(rename = "UserID")]
    pub user_id: String,
    #[serde(rename = "ResultCode", default)]
    pub result_code: i64,
    #[serde(rename = "ResultInfo", default)]
    pub result_info: String,
    /// Absent on items whose `ResultCode` is not 0.
    #[serde(
        rename = "AccountStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub account_status: Option<AccountStatus>,
}

/// `account_check` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResponse {
    #[serde(flatten)]
    pub status: Status,
    #[serde(rename = "ResultItem", default)]
    pub result_item: Vec<CheckResultItem>,
}

/// `account_import` response (also any response whose extra fields we ignore).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlainResponse {
    #[serde(flatten)]
    pub status: Status,
}

/// `multiaccount_import` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultiImportResponse {
    #[serde(flatten)]
    pub status: Status,
    #[serde(rename = "FailAccounts", default)]
    pub fail_accounts: Vec<String>,
}

/// One item of `account_delete`'s `ResultItem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResultItem {
    #[serde(rename = "UserID")]
    pub user_id: String,
    #[serde(rename = "ResultCode", default)]
    pub result_code: i64,
    #[serde(rename = "ResultInfo", default)]
    pub result_info: String,
}

/// `account_delete` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    #[serde(flatten)]
    pub status: Status,
    #[serde(rename = "ResultItem", default)]
    pub result_item: Vec<DeleteResultItem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes_match_the_vendor_samples() {
        let req = CheckRequest {
            check_item: vec![
                UserIdItem {
                    user_id: "UserID_1".into(),
                },
                UserIdItem {
                    user_id: "UserID_2".into(),
                },
            ],
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"CheckItem":[{"UserID":"UserID_1"},{"UserID":"UserID_2"}]}"#
        );
        let imp = ImportRequest {
            user_id: "test".into(),
            nick: Some("test".into()),
            face_url: Some("http://www.qq.com".into()),
        };
        assert_eq!(
            serde_json::to_string(&imp).unwrap(),
            r#"{"UserID":"test","Nick":"test","FaceUrl":"http://www.qq.com"}"#
        );
        let bare = ImportRequest {
            user_id: "u".into(),
            nick: None,
            face_url: None,
        };
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"UserID":"u"}"#);
    }

    #[test]
    fn parses_the_vendor_check_sample() {
        let body = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[
            {"UserID":"UserID_1","ResultCode":0,"ResultInfo":"","AccountStatus":"Imported"},
            {"UserID":"UserID_2","ResultCode":0,"ResultInfo":"","AccountStatus":"NotImported"}]}"#;
        let resp: CheckResponse = serde_json::from_str(body).unwrap();
        assert!(resp.status.is_ok());
        assert_eq!(
            resp.result_item[0].account_status,
            Some(AccountStatus::Imported)
        );
        assert_eq!(
            resp.result_item[1].account_status,
            Some(AccountStatus::NotImported)
        );
        // A failed call carries no ResultItem at all.
        let fail: CheckResponse =
            serde_json::from_str(r#"{"ActionStatus":"FAIL","ErrorCode":70402,"ErrorInfo":"bad"}"#)
                .unwrap();
        assert_eq!(fail.status.error_code, 70402);
        assert!(fail.result_item.is_empty());
    }

    #[test]
    fn user_id_rules() {
        assert!(is_valid_user_id("user_01-A"));
        assert!(is_valid_user_id(&"a".repeat(32)));
        assert!(!is_valid_user_id(&"a".repeat(33)));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("with space"));
        assert!(!is_valid_user_id("usеr")); // Cyrillic 'е'
    }
}
