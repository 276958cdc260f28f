//! `account_check` answers: any body, to a request for 1-8 UserIDs (see
//! `account_sync_fuzz::request`). An answer is either one outcome per requested UserID, each
//! what the body's item for it says, or an error that is the API's or the vendor's.

#![no_main]

use std::collections::HashMap;

use account_sync::chat::answer::{self, CheckOutcome};
use account_sync::chat::Api;
use account_sync_fuzz::{check_answer_error, error_code, request, result_items};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// An item of `ResultItem`: the fields the checks read (see `result_items`), of those
/// that `CheckResultItem` reads. Not one type shared by the answer targets: a field that the
/// library does not read, declared here, would refuse a body that names it twice, which
/// the library accepts.
#[derive(serde::Deserialize)]
struct Item {
    #[serde(rename = "UserID")]
    user_id: Option<Value>,
    #[serde(rename = "ResultCode")]
    result_code: Option<Value>,
    #[serde(rename = "AccountStatus")]
    account_status: Option<Value>,
}

fuzz_target!(|data: &[u8]| {
    let Some((ids, body)) = request(data) else {
        return;
    };
    match answer::check(&ids, body) {
        Ok(outcomes) => {
            assert_eq!(
                outcomes.len(),
                ids.len(),
                "one outcome per requested UserID"
            );
            assert_eq!(error_code(body), Some(0), "a result only from a success");
            // Read independently: the first item for each UserID decides its outcome.
            let items: Vec<Item> = result_items(body).expect("a result from a readable body");
            let mut first: HashMap<&str, &Item> = HashMap::new();
            for item in &items {
                if let Some(id) = item.user_id.as_ref().and_then(Value::as_str) {
                    first.entry(id).or_insert(item);
                }
            }
            for (id, outcome) in ids.iter().zip(&outcomes) {
                let item = first
                    .get(id)
                    .expect("an outcome only for a UserID answered");
                let code = item.result_code.as_ref().map_or(0, |c| c.as_i64().unwrap());
                match outcome {
                    CheckOutcome::Imported | CheckOutcome::NotImported => {
                        assert_eq!(code, 0);
                        let want = match outcome {
                            CheckOutcome::Imported => "Imported",
                            _ => "NotImported",
                        };
                        let status = item.account_status.as_ref().and_then(Value::as_str);
                        assert_eq!(status, Some(want), "{id}");
                    }
                    CheckOutcome::Failed { code: c, info } => {
                        assert_ne!(*c, 0);
                        assert_eq!(*c, code);
                        assert!(info.len() <= 500 + '…'.len_utf8(), "ResultInfo is cut");
                    }
                }
            }
        }
        Err(e) => {
            check_answer_error(&e, Api::AccountCheck);
            if let account_sync::chat::ChatError::Vendor { code, .. } = e {
                assert_eq!(error_code(body), Some(code));
            }
        }
    }
});
