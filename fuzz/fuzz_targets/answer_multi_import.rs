//! `multiaccount_import` answers: any body, to a request for 1-8 UserIDs (see
//! `account_sync_fuzz::request`). A success lists each failed UserID once, only UserIDs that
//! were sent, exactly those the body's `FailAccounts` names; anything else is an error that is
//! the API's or the vendor's.

#![no_main]

use std::collections::HashSet;

use account_sync::chat::answer;
use account_sync::chat::{Api, ChatError};
use account_sync_fuzz::{check_answer_error, error_code, fail_accounts, request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((ids, body)) = request(data) else {
        return;
    };
    match answer::multi_import(&ids, body) {
        Ok(failed) => {
            assert_eq!(error_code(body), Some(0), "a result only from a success");
            let unique: HashSet<&str> = failed.iter().map(String::as_str).collect();
            assert_eq!(
                unique.len(),
                failed.len(),
                "each failed UserID once: {failed:?}"
            );
            for id in &failed {
                assert!(ids.contains(&id.as_str()), "{id} was not sent");
            }
            // Read independently: the same set as the body names.
            let accounts = fail_accounts(body).expect("a result from a readable body");
            let named: HashSet<&str> = accounts.iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(unique, named);
        }
        Err(e) => {
            check_answer_error(&e, Api::MultiaccountImport);
            if let ChatError::Vendor { code, .. } = e {
                assert_eq!(error_code(body), Some(code));
            }
        }
    }
});
