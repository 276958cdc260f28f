//! Answers that answer the request, and each way an HTTP 200 can fail to.

use super::*;
use crate::chat::error::FailureClass;
use crate::chat::health::is_availability_error;

fn check_body(items: &str) -> Vec<u8> {
    format!(r#"{{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{items}]}}"#)
        .into_bytes()
}

fn item(id: &str, status: &str) -> String {
    format!(r#"{{"UserID":"{id}","ResultCode":0,"ResultInfo":"","AccountStatus":"{status}"}}"#)
}

/// The error is the API's: unreadable, retryable, an availability error, about `api`.
fn assert_apis_fault(err: &ChatError, api: Api, mentions: &str) {
    assert!(
        matches!(err, ChatError::BadResponse { api: a, .. } if *a == api),
        "{err:?}"
    );
    assert_eq!(err.class(), FailureClass::Retryable);
    assert!(is_availability_error(err));
    assert!(err.to_string().contains(mentions), "{err}");
}

#[test]
fn check_items_are_matched_to_the_request() {
    let body = check_body(&format!(
        r#"{},{},{{"UserID":"c","ResultCode":70402,"ResultInfo":"info"}}"#,
        item("b", "NotImported"),
        item("a", "Imported")
    ));
    let out = check(&["a", "b", "c", "a"], &body).unwrap();
    assert_eq!(
        out,
        vec![
            CheckOutcome::Imported,
            CheckOutcome::NotImported,
            CheckOutcome::Failed {
                code: 70402,
                info: "info".into()
            },
            CheckOutcome::Imported,
        ]
    );
}

#[test]
fn a_check_answer_must_answer_exactly_the_users_asked_about() {
    let api = Api::AccountCheck;
    let (a, b) = (item("a", "Imported"), item("b", "NotImported"));
    let missing = check(&["a", "z"], &check_body(&a)).unwrap_err();
    assert_apis_fault(&missing, api, "no ResultItem for UserID \"z\"");
    let foreign = check(
        &["a"],
        &check_body(&format!("{a},{}", item("x", "Imported"))),
    );
    assert_apis_fault(
        &foreign.unwrap_err(),
        api,
        "\"x\", which was not asked about",
    );
    let twice = check(&["a", "b"], &check_body(&format!("{a},{b},{a}")));
    assert_apis_fault(&twice.unwrap_err(), api, "\"a\" twice");
    // Only foreign users, as many as were asked about: the answer to somebody else's request.
    let replayed = check(
        &["a", "b"],
        &check_body(&format!(
            "{},{}",
            item("p", "Imported"),
            item("q", "Imported")
        )),
    );
    assert_apis_fault(&replayed.unwrap_err(), api, "not asked about");
    let empty = check(&["a"], &check_body("")).unwrap_err();
    assert_apis_fault(&empty, api, "no ResultItem");
}

#[test]
fn a_check_answer_of_the_wrong_shape_is_the_apis_fault() {
    let api = Api::AccountCheck;
    let unknown_status = check(&["a"], &check_body(&item("a", "Frozen")));
    assert_apis_fault(&unknown_status.unwrap_err(), api, "unknown variant");
    let no_status =
        br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"UserID":"a","ResultCode":0}]}"#;
    assert_apis_fault(
        &check(&["a"], no_status).unwrap_err(),
        api,
        "no AccountStatus",
    );
    for wrong in [
        &br#"{"ActionStatus":"OK","ErrorCode":"0","ResultItem":[]}"#[..],
        br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":{"UserID":"a"}}"#,
        br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"UserID":7,"ResultCode":0}]}"#,
        br#"{"ActionStatus":"OK","ResultItem":[]}"#,
        br#"[]"#,
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"{\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ResultItem\":[",
    ] {
        let err = check(&["a"], wrong).unwrap_err();
        assert_apis_fault(&err, api, "");
    }
    let html = check(&["a"], b"<html><body>Bad Gateway</body></html>").unwrap_err();
    assert!(
        html.to_string().contains("<html><body>Bad Gateway"),
        "{html}"
    );
}

#[test]
fn a_per_item_code_is_that_users_and_the_call_level_code_is_the_calls() {
    let body = br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"UserID":"a","ResultCode":70402,"ResultInfo":"bad"}]}"#;
    assert_eq!(
        check(&["a"], body).unwrap(),
        vec![CheckOutcome::Failed {
            code: 70402,
            info: "bad".into()
        }]
    );
    let fail = br#"{"ActionStatus":"FAIL","ErrorCode":70107,"ErrorInfo":"no such user"}"#;
    assert_eq!(
        check(&["a"], fail).unwrap_err(),
        ChatError::Vendor {
            api: Api::AccountCheck,
            code: 70107,
            info: "no such user".into()
        }
    );
}

#[test]
fn fail_accounts_may_name_only_users_that_were_sent() {
    let api = Api::MultiaccountImport;
    let ok = br#"{"ActionStatus":"OK","ErrorCode":0,"FailAccounts":["b","b"]}"#;
    assert_eq!(
        multi_import(&["a", "b"], ok).unwrap(),
        vec!["b".to_string()]
    );
    let none = br#"{"ActionStatus":"OK","ErrorCode":0}"#;
    assert!(multi_import(&["a"], none).unwrap().is_empty());
    let foreign = br#"{"ActionStatus":"OK","ErrorCode":0,"FailAccounts":["a","x"]}"#;
    let err = multi_import(&["a", "b"], foreign).unwrap_err();
    assert_apis_fault(&err, api, "FailAccounts names \"x\", which was not sent");
    let wrong = br#"{"ActionStatus":"OK","ErrorCode":0,"FailAccounts":"a"}"#;
    assert_apis_fault(&multi_import(&["a"], wrong).unwrap_err(), api, "");
}

#[test]
fn an_import_answer_needs_its_status() {
    assert!(import(br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#).is_ok());
    let err = import(b"OK").unwrap_err();
    assert_apis_fault(&err, Api::AccountImport, "body starts \"OK\"");
}

#[test]
fn vendor_text_and_foreign_ids_are_cut_short() {
    let long = "x".repeat(10_000);
    let body = format!(r#"{{"ActionStatus":"FAIL","ErrorCode":70500,"ErrorInfo":"{long}"}}"#);
    let err = import(body.as_bytes()).unwrap_err();
    assert!(err.to_string().len() < 700, "{}", err.to_string().len());
    let foreign = check(&["a"], &check_body(&item(&long, "Imported"))).unwrap_err();
    assert!(foreign.to_string().len() < 300, "{foreign}");
    // Cutting never splits a character.
    assert_eq!(truncate("ééé", 3), "é…");
}

/// Found by the `answer_import` fuzz target (docs/fuzzing.md): serde_json's type errors quote the
/// value they found whole, escaped, so a long string where a number belongs made an error text
/// longer than the body (1.5 MB from a 256 KiB body, into logs and dead-letter reasons).
#[test]
fn a_value_quoted_by_the_parse_error_is_cut_short() {
    // The fuzzer's input: a JSON string of DEL characters, each shown as `\u{7f}`.
    let found = "\"A={>>>>>".to_owned() + &"\x7f".repeat(52) + ">>\x7f>z______>{\"Actio";
    let err = import(found.as_bytes()).unwrap_err();
    assert_apis_fault(&err, Api::AccountImport, "invalid type: string");
    assert!(err.to_string().len() < 1024, "{err}");

    let huge = "\x7f".repeat(256 * 1024);
    for body in [
        format!(r#"{{"ActionStatus":"OK","ErrorCode":"{huge}"}}"#),
        format!(
            r#"{{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{{"UserID":"a","AccountStatus":"{huge}"}}]}}"#
        ),
    ] {
        let err = check(&["a"], body.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 1024, "{} bytes", text.len());
        // The position is kept after the cut.
        assert!(text.contains(" at line 1 column "), "{text}");
    }
}

#[test]
fn delete_items_are_matched_to_the_request() {
    let body = br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[
        {"UserID":"b","ResultCode":70107,"ResultInfo":"not exist"},
        {"UserID":"a","ResultCode":0,"ResultInfo":""},
        {"UserID":"c","ResultCode":70402,"ResultInfo":"bad"}]}"#;
    assert_eq!(
        delete(&["a", "b", "c"], body).unwrap(),
        vec![
            DeleteOutcome::Deleted,
            DeleteOutcome::Absent,
            DeleteOutcome::Failed {
                code: 70402,
                info: "bad".into()
            },
        ]
    );
    // An item for someone not asked about, or none for someone asked about: the API's fault.
    let foreign =
        br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"UserID":"x","ResultCode":0}]}"#;
    assert_apis_fault(
        &delete(&["a"], foreign).unwrap_err(),
        Api::AccountDelete,
        "not asked about",
    );
    let short = br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[]}"#;
    assert_apis_fault(
        &delete(&["a"], short).unwrap_err(),
        Api::AccountDelete,
        "no ResultItem",
    );
    // Deletion switched off for the app: the call's own error, systemic.
    let off =
        br#"{"ActionStatus":"FAIL","ErrorCode":71000,"ErrorInfo":"only trial apps can delete"}"#;
    let err = delete(&["a"], off).unwrap_err();
    assert_eq!(err.vendor_code(), 71000);
    assert_eq!(err.class(), FailureClass::Systemic);
}

/// Found by the `answer_delete` target (CI, seeded run): a field of an item that nothing reads
/// may hold a number no `f64` can hold. The answer is read all the same, as the vendor may add
/// fields; it was the target's own check, reading the body as one `serde_json::Value`, that
/// refused it.
#[test]
fn an_unread_field_of_an_item_may_hold_any_number() {
    let body =
        check_body(r#"{"UserID":"a","Unread":7e402,"ResultCode":0,"AccountStatus":"Imported"}"#);
    assert_eq!(check(&["a"], &body).unwrap(), vec![CheckOutcome::Imported]);
    let del = br#"{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"UserID":"a","Unread":7e402,"ResultCode":70107}]}"#;
    assert_eq!(delete(&["a"], del).unwrap(), vec![DeleteOutcome::Absent]);
}
